"""Every error leaves the API as JSON `{"error", "message"}` with the right status."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import falcon

from freight_server.services.api.submission import InvalidRequest
from freight_server.shared.bus import BrokerUnavailable, ConfirmMissing

log = logging.getLogger(__name__)


class ApiError(falcon.HTTPError):
    """`details`: more fields of the body, beside `error` and `message`."""

    def __init__(
        self,
        status: str,
        error: str,
        message: str,
        headers: Any = None,
        details: Mapping[str, Any] | None = None,
    ):
        super().__init__(status, title=error, description=message, headers=headers)
        self.details = dict(details or {})


def not_found(what: str) -> ApiError:
    return ApiError(falcon.HTTP_404, "not_found", what)


def bad_request(message: str) -> ApiError:
    return ApiError(falcon.HTTP_400, "invalid_request", message)


def overloaded(retry_after: int = 1) -> ApiError:
    """Admission control's answer (freight_server/services/api/admission.py): nothing was done."""
    return ApiError(
        falcon.HTTP_503,
        "overloaded",
        "the API is at capacity and did nothing with this request; try again in a moment",
        headers={"Retry-After": str(retry_after)},
    )


def _slug(title: str) -> str:
    """falcon's own titles read like "404 Not Found": keep the words."""
    words = re.sub(r"^\d+\s*", "", title).lower()
    return re.sub(r"[^a-z0-9]+", "_", words).strip("_") or "error"


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {
        **(exc.details if isinstance(exc, ApiError) else {}),
        "error": exc.title if isinstance(exc, ApiError) else _slug(exc.title or "error"),
        "message": exc.description or exc.title or "error",
    }


def handle_invalid_request(
    req: falcon.Request, resp: falcon.Response, exc: InvalidRequest, params: Any
) -> None:
    raise ApiError(falcon.HTTP_400, "invalid_request", str(exc))


def handle_broker_unavailable(
    req: falcon.Request, resp: falcon.Response, exc: BrokerUnavailable, params: Any
) -> None:
    outcome = (
        "it may have been done all the same: look before trying again"
        if isinstance(exc, ConfirmMissing)
        else "nothing was accepted, try again shortly"
    )
    raise ApiError(
        falcon.HTTP_503, "unavailable", f"{exc}; {outcome}", headers={"Retry-After": "2"}
    )


def handle_client_timeout(
    req: falcon.Request, resp: falcon.Response, exc: TimeoutError, params: Any
) -> None:
    raise ApiError(
        falcon.HTTP_408, "timeout", "the client stopped sending its request; nothing was accepted"
    )


def handle_unexpected(
    req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any
) -> None:
    if isinstance(exc, falcon.HTTPError):
        raise exc
    log.exception("unhandled error on %s %s", req.method, req.path)
    raise ApiError(
        falcon.HTTP_500, "internal", "Freight failed to handle this request; see its log"
    )


def install(app: falcon.App) -> None:
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(InvalidRequest, handle_invalid_request)
    app.add_error_handler(BrokerUnavailable, handle_broker_unavailable)
    app.add_error_handler(TimeoutError, handle_client_timeout)
