"""The one definition of a job as the API sees it: `JobSpec` is what `POST /jobs` accepts,
`Job` what `GET /jobs/{id}` answers, `Submitted` what a submission answers.

The API validates every submission through `JobSpec` (JSON, URL-encoded and multipart alike),
`/openapi.json` is generated from these models, the SDK's `Client.submit` and results are built
on them, and `freight submit` takes its options' help from them. This module imports nothing but
pydantic, so the client can use it without the server's dependencies.

A form sends every field as text: the checks below accept `"2"` for 2 and repeated `KEY=VALUE`
fields for a map, and each rejection is a message fit to show the user as `<field>: <message>`
(the API names the field). No message ever repeats a value of `env`, `secret_env` or `labels`:
under `secret_env` it is a secret.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

MAX_COMMAND_BYTES = 128 * 1024
MAX_NAME_CHARS = 200
MAX_IMAGE_CHARS = 512
MAX_ENV_ENTRIES = 1000
MAX_LABELS = 64
MAX_LABEL_VALUE_CHARS = 255
MAX_ATTEMPTS = 10
MAX_PRIORITY = 1000
MIN_MEMORY_MB = 6  # Docker refuses a smaller memory limit
MAX_MEMORY_MB = 1 << 30  # 1 PiB: larger is a typo, and would overflow the engine's bytes
MIN_CPUS = 0.01  # Docker's smallest CPU quota
# 30 days: a longer run is a typo, and a huge number would overflow the runner's deadline.
MAX_TIMEOUT_SECONDS = 30 * 24 * 3600
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Like a Kubernetes label key: short, and safe in a URL, a shell and a file name.
LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"
# The fields that take KEY=VALUE pairs: a JSON object, or (in a form) one field per pair.
PAIR_FIELDS = ("env", "secret_env", "labels")


class Status(StrEnum):
    """QUEUED: accepted, waiting for capacity. PENDING: given to a runner, being prepared.
    RUNNING: container started. COMPLETE: exit code 0. FAILED: any other end; `reason` says why
    (exit code N, cancelled, timed out, lost, freight error)."""

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in (Status.COMPLETE, Status.FAILED)


def _pairs_schema(key_pattern: str, max_pairs: int) -> WithJsonSchema:
    """A map as OpenAPI shows it: an object, or the repeated KEY=VALUE fields a form sends."""
    pair = {"type": "string", "pattern": "^[^=]+=.*$"}
    return WithJsonSchema(
        {
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "propertyNames": {"pattern": key_pattern},
                    "maxProperties": max_pairs,
                },
                {"type": "array", "items": pair, "maxItems": max_pairs},
                pair,
            ],
        }
    )


class JobSpec(BaseModel):
    """What `POST /jobs` accepts (input files come beside it, as multipart `file[]` parts)."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Submission")

    command: str = Field(
        min_length=1,
        max_length=MAX_COMMAND_BYTES,
        description=f"Shell command run with `sh -c` (at most {MAX_COMMAND_BYTES} bytes).",
    )
    name: str | None = Field(
        None,
        max_length=MAX_NAME_CHARS,
        pattern=NO_CONTROL_CHARACTERS,
        description=f"A short human name for the job (at most {MAX_NAME_CHARS} characters).",
    )
    labels: Annotated[dict[str, str], _pairs_schema(LABEL_KEY, MAX_LABELS)] = Field(
        default_factory=dict,
        description=f"Your own KEY=VALUE tags (at most {MAX_LABELS}; keys of letters, digits "
        f"and `._/-`, up to 63 characters; values up to {MAX_LABEL_VALUE_CHARS}).",
    )
    image: str | None = Field(
        None,
        max_length=MAX_IMAGE_CHARS,
        description="Container image, e.g. `python:3.12`; by default the server's.",
    )
    gpus: int | None = Field(None, ge=0, description="Number of GPUs the job needs.")
    gpu_memory: int | None = Field(
        None,
        ge=1,
        le=MAX_MEMORY_MB,
        description="MiB of memory each of its GPUs must have; only with `gpus`.",
    )
    cpus: float | None = Field(
        None, ge=MIN_CPUS, description="CPUs the job may use, e.g. 2 or 0.5."
    )
    memory: int | None = Field(
        None,
        ge=MIN_MEMORY_MB,
        le=MAX_MEMORY_MB,
        description="MiB of memory the job may use (the container's limit).",
    )
    env: Annotated[dict[str, str], _pairs_schema(ENV_NAME, MAX_ENV_ENTRIES)] = Field(
        default_factory=dict, description="Environment variables of the job, KEY=VALUE."
    )
    secret_env: Annotated[dict[str, str], _pairs_schema(ENV_NAME, MAX_ENV_ENTRIES)] = Field(
        default_factory=dict,
        repr=False,
        description="Like `env`, but stored sealed (FREIGHT_SECRET_KEY) and shown by name "
        "only; refused with 400 where the server has no key.",
    )
    timeout: float | None = Field(
        None,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="Seconds the job may run (at most 30 days); then it is stopped.",
    )
    max_attempts: int = Field(
        1,
        ge=1,
        le=MAX_ATTEMPTS,
        description="Attempts when Freight, not the command, fails (a runner lost).",
    )
    priority: int = Field(
        0,
        ge=-MAX_PRIORITY,
        le=MAX_PRIORITY,
        description="Higher runs first; within a priority, owners share the cluster fairly "
        f"(from -{MAX_PRIORITY} to {MAX_PRIORITY}).",
    )

    @field_validator("command", mode="before")
    @classmethod
    def _command(cls, value: Any) -> str:
        if value is None:
            raise _invalid("required: the shell command to run")
        if not isinstance(value, str):
            raise _invalid("must be a string")
        if not value.strip():
            raise _invalid("must not be empty")
        if "\x00" in value:
            raise _invalid("must not contain NUL bytes")
        if len(value.encode()) > MAX_COMMAND_BYTES:
            raise _invalid(f"longer than {MAX_COMMAND_BYTES} bytes")
        return value

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or re.search(r"[\x00-\x1f\x7f]", value):
            raise _invalid("must be text on one line, without control characters")
        if len(value) > MAX_NAME_CHARS:
            raise _invalid(f"longer than {MAX_NAME_CHARS} characters")
        return value

    @field_validator("image", mode="before")
    @classmethod
    def _image(cls, value: Any) -> str | None:
        if value is None or value == "":
            return None
        if (
            not isinstance(value, str)
            or len(value) > MAX_IMAGE_CHARS
            or any(c.isspace() for c in value)
        ):
            raise _invalid("must be an image reference such as 'python:3.12'")
        return value

    @field_validator("gpus", "gpu_memory", "memory", "max_attempts", "priority", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> int | None:
        return _integer(value)

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus(cls, value: Any) -> float | None:
        cpus = _number(value, "must be a number of CPUs, such as 2 or 0.5")
        if cpus is not None and (not math.isfinite(cpus) or cpus < MIN_CPUS):
            raise _invalid(f"must be a number of CPUs of at least {MIN_CPUS}")
        return cpus

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        seconds = _number(value, "must be a number of seconds")
        if seconds is not None and not (
            math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_SECONDS
        ):
            raise _invalid(f"must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS}")
        return seconds

    @field_validator("env", "secret_env", mode="before")
    @classmethod
    def _variables(cls, value: Any) -> dict[str, str]:
        variables = _pairs(value)
        for name, text in variables.items():
            if not re.match(ENV_NAME, name):
                raise _invalid(f"invalid variable name {name!r}")
            if "\x00" in text:
                raise _invalid(f"{name}: value must be a string without NUL bytes")
        if len(variables) > MAX_ENV_ENTRIES:
            raise _invalid(f"more than {MAX_ENV_ENTRIES} variables")
        return variables

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> dict[str, str]:
        labels = _pairs(value)
        for key, text in labels.items():
            if not re.match(LABEL_KEY, key):
                raise _invalid(
                    f"invalid label key {key!r}: up to 63 letters, digits and ._/-, "
                    "starting with a letter or digit"
                )
            if len(text) > MAX_LABEL_VALUE_CHARS or re.search(r"[\x00-\x1f\x7f]", text):
                raise _invalid(
                    f"{key}: value must be at most {MAX_LABEL_VALUE_CHARS} characters, "
                    "without control characters"
                )
        if len(labels) > MAX_LABELS:
            raise _invalid(f"more than {MAX_LABELS} labels")
        return labels

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.gpu_memory is not None and not self.gpus:
            raise _FieldError("gpu_memory", "applies only to a job that asks for gpus")
        both = sorted(set(self.secret_env) & set(self.env))
        if both:
            raise _FieldError("secret_env", f"{both[0]} is also in env; name it in one only")
        return self


class AssignedGpu(BaseModel):
    """A GPU a runner reserved for the job's current attempt."""

    index: int | None = None
    uuid: str | None = None
    name: str | None = None


class Job(BaseModel):
    """What `GET /jobs/{id}` answers: the job as submitted, and its life so far."""

    # The API sends every field, null when unknown; a client older than a field ignores it.
    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    job_id: str
    status: Status
    command: str
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    owner: str | None = Field(None, description="The user whose token submitted it.")
    image: str | None = None
    gpus: int | None = None
    gpu_memory: int | None = Field(None, description="MiB each of its GPUs must have.")
    cpus: float | None = None
    memory: int | None = Field(None, description="MiB, the container's memory limit.")
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: dict[str, str] = Field(
        default_factory=dict,
        description="The secret variables' names, each shown as `***`: never their values.",
    )
    timeout: float | None = None
    max_attempts: int | None = None
    priority: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = Field(
        None, description="Why it failed, or why it waits (no runner fits it yet)."
    )
    runner: str | None = None
    attempt: int | None = None
    assigned_gpus: tuple[AssignedGpu, ...] = ()


class Submitted(BaseModel):
    """What `POST /jobs` answers: the job is in the log, not yet placed."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    command: str
    status: Status
    gpus: int | None = Field(None, description="Present when GPUs were asked for.")


# -- checks shared by several fields ---------------------------------------------------------


def _invalid(message: str) -> PydanticCustomError:
    # A custom error's text is shown as is (no context: nothing in it is read as a
    # placeholder); the API puts the field's name before it.
    return PydanticCustomError("invalid", message)


class _FieldError(ValueError):
    """A check across fields: names the one to fix, since pydantic cannot."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def field_error(ctx: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(field, message) of a check across fields, from a pydantic error's context."""
    error = (ctx or {}).get("error")
    return (error.field, error.message) if isinstance(error, _FieldError) else None


def _integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _invalid("must be an integer")
    try:
        return int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise _invalid(f"must be an integer, got {value!r}") from None


def _number(value: Any, complaint: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _invalid(complaint)
    try:
        return float(value)
    except ValueError:
        raise _invalid(f"{complaint}, got {value!r}") from None


def _pairs(value: Any) -> dict[str, str]:
    """An object (JSON, or a form field holding JSON) or KEY=VALUE strings, one or a list.
    A value is never quoted in an error: it may be a secret."""
    pairs: dict[str, str] = {}
    for item in value if isinstance(value, list | tuple) else [value]:
        for name, text in _pair_items(item):
            if not isinstance(name, str):
                raise _invalid(f"invalid name {name!r}")
            if not isinstance(text, str):
                raise _invalid(f"{name}: value must be a string")
            pairs[name] = text
    return pairs


def _pair_items(item: Any) -> list[tuple[Any, Any]]:
    if item is None or item == "":
        return []
    if isinstance(item, str) and item.lstrip().startswith("{"):
        try:
            item = json.loads(item)
        except (json.JSONDecodeError, RecursionError):
            raise _invalid("is not a valid JSON object") from None
    if isinstance(item, Mapping):
        return list(item.items())
    if isinstance(item, str):
        name, sep, text = item.partition("=")
        if not sep:
            raise _invalid("expected KEY=VALUE strings")
        return [(name, text)]
    raise _invalid("must be an object or KEY=VALUE strings")
