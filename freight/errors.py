"""The SDK's errors: one small hierarchy, mapped once from HTTP and network failures."""

from __future__ import annotations


class FreightError(Exception):
    """Freight (or the way to it) refused or failed; `message` says what, and what to do."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error
        # Seconds the server asked us to wait before trying again (its Retry-After), if any.
        self.retry_after = retry_after


class InvalidRequest(FreightError):
    """The API rejected what was sent (400, 413, 415): fix the request, don't retry it."""


class Unauthorized(FreightError):
    """The API wants a valid token (401, 403): set FREIGHT_TOKEN."""


class NotFound(FreightError):
    """No such job, file or route (404)."""


class Conflict(FreightError):
    """The job is in a state that forbids this, e.g. cancelling a job that already ended (409)."""


class Unavailable(FreightError):
    """Freight is up but cannot take this now, e.g. its broker is away (503): retry shortly."""


class ConnectionFailed(FreightError):
    """No answer from the API's address at all."""


class WaitTimedOut(FreightError, TimeoutError):
    """`wait` gave up before the job ended; the job itself goes on."""


_BY_STATUS: dict[int, type[FreightError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    415: InvalidRequest,
    422: InvalidRequest,
    503: Unavailable,
}


def error_for_status(
    status: int, error: str | None, message: str, retry_after: float | None = None
) -> FreightError:
    kind = _BY_STATUS.get(status, FreightError)
    return kind(message, status=status, error=error, retry_after=retry_after)
