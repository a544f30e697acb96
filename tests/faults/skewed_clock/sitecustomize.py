"""Loaded (through PYTHONPATH) only into the fault suite's runner whose wall clock libfaketime sets
ahead. With FAKETIME_DONT_FAKE_MONOTONIC=1, which keeps its monotonic clock true, libfaketime
0.9.10 answers Python's time.sleep (an absolute clock_nanosleep on the monotonic clock) with
EINVAL; a wait on an Event, which it leaves alone, sleeps instead."""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
