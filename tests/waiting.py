"""Tests wait on conditions, never on fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 20.0, what: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout`."""
    result = poll(condition, timeout)
    if not result:
        raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
    return result


def poll(condition: Callable[[], T], timeout: float) -> T | None:
    """`condition`'s first truthy result within `timeout`, else its last (falsy) one: for a
    test that reports what did not happen rather than failing at once (the fault suite)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
