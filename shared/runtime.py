"""What every service process does the same way: logging and stopping on a signal."""

from __future__ import annotations

import logging
import signal
import sys
import threading


def configure_logging(service: str, level: str = "INFO") -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for loops that should finish and exit cleanly."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop
