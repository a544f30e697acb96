"""When the SDK sends a request again: after a 503 or a broken connection, and only a request
that is safe to repeat (a read, a cancel, a submission carrying its Idempotency-Key).

Waits follow the server's `Retry-After` when it gives one, else exponential backoff with full
jitter (a random wait up to the step's ceiling), so many clients turned away at once do not
all come back at once. Both the number of retries and the time spent retrying are bounded.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from freight.errors import ConnectionFailed, FreightError, Unavailable

# What a retry may cure: Freight busy or restarting, or the way to it briefly gone.
RETRYABLE = (Unavailable, ConnectionFailed)


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more tries at most, over `retry_for` seconds at most; `retries=0` sends once.
    Each wait is at most `max_backoff` seconds, even when the server asks for longer."""

    retries: int = 5
    backoff: float = 0.5  # the first wait's ceiling, doubled on each retry
    max_backoff: float = 30.0
    retry_for: float = 120.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    jitter: Callable[[float, float], float] = field(
        default=random.uniform, repr=False, compare=False
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RetryPolicy:
        """FREIGHT_RETRIES and FREIGHT_RETRY_FOR (seconds) override the defaults."""
        policy = cls()
        retries = environ.get("FREIGHT_RETRIES")
        retry_for = environ.get("FREIGHT_RETRY_FOR")
        return cls(
            retries=int(retries) if retries else policy.retries,
            retry_for=float(retry_for) if retry_for else policy.retry_for,
        )

    def start(self) -> Attempts:
        return Attempts(self)

    def wait(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...)."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        if retry_after is None:
            return self.jitter(0, ceiling)
        # Never sooner than the server asked; a little spread so that clients it told the
        # same time do not come back in step.
        return min(self.max_backoff, retry_after + self.jitter(0, self.backoff))


class Attempts:
    """One request's tries under a policy."""

    def __init__(self, policy: RetryPolicy):
        self._policy = policy
        self._started = policy.clock()
        self._retries = 0

    def wait_before_retry(self, error: FreightError) -> float:
        """How long to wait before sending again; raises when the policy is spent, with the
        last error's kind and message and how long we tried."""
        policy = self._policy
        self._retries += 1
        delay = policy.wait(self._retries, error.retry_after)
        spent = policy.clock() - self._started
        if self._retries > policy.retries or spent + delay > policy.retry_for:
            raise type(error)(
                f"{error.message} (gave up after {self._retries} tries in {spent:.1f} s; "
                "FREIGHT_RETRIES and FREIGHT_RETRY_FOR set how long to keep trying)",
                status=error.status,
                error=error.error,
            ) from error
        return delay


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """`Retry-After` as seconds from now: it is either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())
