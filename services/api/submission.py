"""What a user may submit, and the checks that turn a request's fields into a JobRequest.

Fields arrive as lists of values, from JSON (typed) or a form (strings); every check names the
field it rejects so the user knows what to fix.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_COMMAND_BYTES = 128 * 1024
MAX_ENV_ENTRIES = 1000
MAX_ATTEMPTS = 10
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
KNOWN_FIELDS = frozenset({"command", "gpus", "image", "env", "timeout", "max_attempts"})


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class JobRequest:
    command: str
    image: str
    gpus: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    max_attempts: int = 1

    def event_data(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "image": self.image,
            "gpus": self.gpus,
            "env": dict(self.env),
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
        }


def parse_job_request(fields: Mapping[str, Sequence[Any]], default_image: str) -> JobRequest:
    unknown = sorted(set(fields) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field; expected one of {sorted(KNOWN_FIELDS)}")
    return JobRequest(
        command=_command(_single(fields, "command")),
        image=_image(_single(fields, "image"), default_image),
        gpus=_integer(_single(fields, "gpus"), "gpus", minimum=0),
        env=_env(fields.get("env", [])),
        timeout=_timeout(_single(fields, "timeout")),
        max_attempts=_integer(_single(fields, "max_attempts"), "max_attempts", 1, MAX_ATTEMPTS)
        or 1,
    )


def _single(fields: Mapping[str, Sequence[Any]], name: str) -> Any:
    values = fields.get(name) or []
    if len(values) > 1:
        raise InvalidRequest(name, "given more than once")
    return values[0] if values else None


def _command(value: Any) -> str:
    if value is None:
        raise InvalidRequest("command", "required: the shell command to run")
    if not isinstance(value, str):
        raise InvalidRequest("command", "must be a string")
    if not value.strip():
        raise InvalidRequest("command", "must not be empty")
    if "\x00" in value:
        raise InvalidRequest("command", "must not contain NUL bytes")
    if len(value.encode()) > MAX_COMMAND_BYTES:
        raise InvalidRequest("command", f"longer than {MAX_COMMAND_BYTES} bytes")
    return value


def _image(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or len(value) > 512 or any(c.isspace() for c in value):
        raise InvalidRequest("image", "must be an image reference such as 'python:3.12'")
    return value


def _integer(value: Any, name: str, minimum: int, maximum: int | None = None) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidRequest(name, "must be an integer")
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise InvalidRequest(name, f"must be an integer, got {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidRequest(name, f"must be {bound}, got {number}")
    return number


def _timeout(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest("timeout", "must be a number of seconds")
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidRequest("timeout", f"must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequest("timeout", "must be a positive number of seconds")
    return seconds


def _env(values: Sequence[Any]) -> dict[str, str]:
    """An object (JSON, or a form field holding JSON) or repeated KEY=VALUE strings."""
    env: dict[str, str] = {}
    for value in values:
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InvalidRequest("env", "is not a valid JSON object") from None
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, str):
            name, sep, text = value.partition("=")
            if not sep:
                raise InvalidRequest("env", f"expected KEY=VALUE, got {value!r}")
            items = [(name, text)]
        else:
            raise InvalidRequest("env", "must be an object or KEY=VALUE strings")
        for name, text in items:
            if not isinstance(name, str) or not ENV_NAME.match(name):
                raise InvalidRequest("env", f"invalid variable name {name!r}")
            if not isinstance(text, str) or "\x00" in text:
                raise InvalidRequest("env", f"{name}: value must be a string without NUL bytes")
            env[name] = text
    if len(env) > MAX_ENV_ENTRIES:
        raise InvalidRequest("env", f"more than {MAX_ENV_ENTRIES} variables")
    return env
