"""What every service process does the same way: logging and stopping on a signal."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from freight_server.shared.config import ConfigError

LOG_FORMATS = ("text", "json")

# A line about a job names it "job <id>" (the lifecycle lines: accepted, placed, launching,
# ended); that argument is the record's job_id unless the call passed one in `extra`.
_JOB_PLACEHOLDER = re.compile(r"\bjob (%[-#0 +]*\d*(?:\.\d+)?[sdr])")
_PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]")


def job_id_of(record: logging.LogRecord) -> str | None:
    explicit = getattr(record, "job_id", None)
    if explicit:
        return str(explicit)
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple):
        return None
    named = _JOB_PLACEHOLDER.search(record.msg)
    if named is None:
        return None
    index = sum(
        1 for p in _PLACEHOLDER.finditer(record.msg, 0, named.start(1)) if p.group() != "%%"
    )
    return str(record.args[index]) if index < len(record.args) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line for log shippers: ts, level, service, logger, message, job_id."""

    def __init__(self, service: str):
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = job_id_of(record)
        if job_id:
            line["job_id"] = job_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")


def configure_logging(service: str, level: str = "INFO", log_format: str | None = None) -> None:
    """`FREIGHT_LOG_FORMAT`: `text` (the default, for people) or `json` (for log shippers)."""
    chosen = (log_format or os.environ.get("FREIGHT_LOG_FORMAT") or "text").strip().lower()
    if chosen not in LOG_FORMATS:
        raise ConfigError(f"FREIGHT_LOG_FORMAT={chosen!r} must be one of {LOG_FORMATS}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if chosen == "json" else TextFormatter(service))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a line per plugin at every start


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for loops that should finish and exit cleanly."""
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        logging.getLogger(__name__).info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop
