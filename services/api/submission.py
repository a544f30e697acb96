"""What a user may submit, and the checks that turn a request's fields into a JobRequest.

Fields arrive as lists of values, from JSON (typed) or a form (strings); every check names the
field it rejects so the user knows what to fix.
"""

from __future__ import annotations

import fnmatch
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
MIN_MEMORY_MB = 6  # Docker refuses a smaller memory limit
MAX_MEMORY_MB = 1 << 30  # 1 PiB: larger is a typo, and would overflow the engine's bytes
MIN_CPUS = 0.01  # Docker's smallest CPU quota
# 30 days: a longer run is a typo, and a huge number would overflow the runner's deadline.
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
KNOWN_FIELDS = frozenset(
    {
        "command",
        "gpus",
        "gpu_memory",
        "cpus",
        "memory",
        "image",
        "env",
        "secret_env",
        "timeout",
        "max_attempts",
    }
)


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
    gpu_memory: int | None = None  # MiB each GPU must have
    cpus: float | None = None
    memory: int | None = None  # MiB
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    max_attempts: int = 1
    # Plain values, kept out of event_data(): the API seals them (shared/secret_env.py).
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def event_data(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "image": self.image,
            "gpus": self.gpus,
            "gpu_memory": self.gpu_memory,
            "cpus": self.cpus,
            "memory": self.memory,
            "env": dict(self.env),
            "timeout": self.timeout,
            "max_attempts": self.max_attempts,
        }


def parse_job_request(
    fields: Mapping[str, Sequence[Any]],
    default_image: str,
    allowed_images: Sequence[str] = (),
) -> JobRequest:
    unknown = sorted(set(fields) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field; expected one of {sorted(KNOWN_FIELDS)}")
    gpus = _integer(_single(fields, "gpus"), "gpus", minimum=0)
    env = _env(fields.get("env", []))
    return JobRequest(
        command=_command(_single(fields, "command")),
        image=_allowed(_image(_single(fields, "image"), default_image), allowed_images),
        gpus=gpus,
        gpu_memory=_gpu_memory(_single(fields, "gpu_memory"), gpus),
        cpus=_cpus(_single(fields, "cpus")),
        memory=_integer(_single(fields, "memory"), "memory", MIN_MEMORY_MB, MAX_MEMORY_MB),
        env=env,
        secret_env=_secret_env(fields.get("secret_env", []), env),
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


def _allowed(image: str, patterns: Sequence[str]) -> str:
    """FREIGHT_ALLOWED_IMAGES: shell-style patterns; none set, any image."""
    if patterns and not any(fnmatch.fnmatchcase(image, p) for p in patterns):
        raise InvalidRequest(
            "image", f"{image!r} is not allowed here; allowed images: {', '.join(patterns)}"
        )
    return image


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


def _gpu_memory(value: Any, gpus: int | None) -> int | None:
    mib = _integer(value, "gpu_memory", 1, MAX_MEMORY_MB)
    if mib is not None and not gpus:
        raise InvalidRequest("gpu_memory", "applies only to a job that asks for gpus")
    return mib


def _cpus(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest("cpus", "must be a number of CPUs, such as 2 or 0.5")
    try:
        cpus = float(value)
    except ValueError:
        raise InvalidRequest("cpus", f"must be a number of CPUs, got {value!r}") from None
    if not math.isfinite(cpus) or cpus < MIN_CPUS:
        raise InvalidRequest("cpus", f"must be a number of CPUs of at least {MIN_CPUS}")
    return cpus


def _timeout(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest("timeout", "must be a number of seconds")
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidRequest("timeout", f"must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidRequest(
            "timeout", f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS}"
        )
    return seconds


def _secret_env(values: Sequence[Any], env: Mapping[str, str]) -> dict[str, str]:
    secret = _env(values, "secret_env")
    both = sorted(set(secret) & set(env))
    if both:
        raise InvalidRequest("secret_env", f"{both[0]} is also in env; name it in one only")
    return secret


def _env(values: Sequence[Any], field: str = "env") -> dict[str, str]:
    """An object (JSON, or a form field holding JSON) or repeated KEY=VALUE strings. A value is
    never echoed in an error: under `secret_env` it is a secret."""
    env: dict[str, str] = {}
    for value in values:
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise InvalidRequest(field, "is not a valid JSON object") from None
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, str):
            name, sep, text = value.partition("=")
            if not sep:
                raise InvalidRequest(field, "expected KEY=VALUE strings")
            items = [(name, text)]
        else:
            raise InvalidRequest(field, "must be an object or KEY=VALUE strings")
        for name, text in items:
            if not isinstance(name, str) or not ENV_NAME.match(name):
                raise InvalidRequest(field, f"invalid variable name {name!r}")
            if not isinstance(text, str) or "\x00" in text:
                raise InvalidRequest(field, f"{name}: value must be a string without NUL bytes")
            env[name] = text
    if len(env) > MAX_ENV_ENTRIES:
        raise InvalidRequest(field, f"more than {MAX_ENV_ENTRIES} variables")
    return env
