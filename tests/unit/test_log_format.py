"""FREIGHT_LOG_FORMAT=json: one object per line, with the job's id on every line about a job."""

from __future__ import annotations

import json
import logging

import pytest

from freight_server.shared.config import ConfigError
from freight_server.shared.runtime import JsonFormatter, configure_logging


def formatted(msg: str, *args: object, **extra: object) -> dict:
    record = logging.LogRecord("services.x", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return json.loads(JsonFormatter("scheduler").format(record))


def test_a_line_is_one_json_object_with_the_fields_shippers_index():
    line = formatted("placed job %s on %s (attempt %d)", "j-1", "gpu-1", 1)
    assert line["level"] == "INFO" and line["service"] == "scheduler"
    assert line["logger"] == "services.x" and line["ts"].endswith("+00:00")
    assert line["message"] == "placed job j-1 on gpu-1 (attempt 1)"
    assert line["job_id"] == "j-1"


@pytest.mark.parametrize(
    "msg, args",
    [
        ("job %s attempt %d ended: %s (%s)", ("j-1", 1, "succeeded", "exit code 0")),
        ("100%% of %d slots busy; launching job %s", (4, "j-1")),
        ("cancel requested for job %s (%s)", ("j-1", "RUNNING")),
    ],
)
def test_the_job_named_in_a_line_is_its_job_id(msg, args):
    assert formatted(msg, *args)["job_id"] == "j-1"


def test_an_explicit_job_id_wins_and_other_lines_have_none():
    assert formatted("accepted", job_id="j-2")["job_id"] == "j-2"
    assert "job_id" not in formatted("runner %s is lost", "gpu-1")


def test_an_unknown_format_is_refused():
    with pytest.raises(ConfigError, match="FREIGHT_LOG_FORMAT"):
        configure_logging("api", log_format="xml")
