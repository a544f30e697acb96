"""What a user may submit: a request's fields validated through the one job model
(freight/jobspec.py), then the server's own rules (its default and allowed images).

Fields arrive as lists of values, from JSON (typed) or a form (strings); every rejection names
the field it rejects so the user knows what to fix.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from freight.jobspec import MAX_TIMEOUT_SECONDS, PAIR_FIELDS, JobSpec, field_error

__all__ = ["MAX_TIMEOUT_SECONDS", "InvalidRequest", "JobRequest", "parse_job_request"]

KNOWN_FIELDS = frozenset(JobSpec.model_fields)
# pydantic's own range checks (the model's ge/le/gt bounds), in the words of the other checks.
BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}


class InvalidRequest(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class JobRequest(JobSpec):
    """A submission the API accepted, its image resolved to the one the job will run."""

    def event_data(self) -> dict[str, Any]:
        """JobSubmitted's data; secret values stay out: the API seals them (shared/secret_env)."""
        return self.model_dump(exclude={"secret_env"})


def parse_job_request(
    fields: Mapping[str, Sequence[Any]],
    default_image: str,
    allowed_images: Sequence[str] = (),
) -> JobRequest:
    try:
        request = JobRequest.model_validate(_model_input(fields))
    except ValidationError as exc:
        raise _invalid_request(exc.errors()[0]) from None
    image = _allowed(request.image or default_image, allowed_images)
    return request.model_copy(update={"image": image})


def _model_input(fields: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """One value per field, but every value of a KEY=VALUE field (a form repeats it)."""
    unknown = sorted(set(fields) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(unknown[0], f"unknown field; expected one of {sorted(KNOWN_FIELDS)}")
    values: dict[str, Any] = {}
    for name, given in fields.items():
        if name in PAIR_FIELDS:
            values[name] = list(given)
        elif len(given) > 1:
            raise InvalidRequest(name, "given more than once")
        elif given:
            values[name] = given[0]
    return values


def _invalid_request(error: ErrorDetails) -> InvalidRequest:
    across = field_error(error.get("ctx"))
    if across is not None:
        return InvalidRequest(*across)
    field = str(error["loc"][0]) if error["loc"] else "body"
    if error["type"] == "missing":
        return InvalidRequest(field, f"required: {JobSpec.model_fields[field].description}")
    if error["type"] in BOUNDS:
        key, words = BOUNDS[error["type"]]
        limit = (error.get("ctx") or {})[key]
        return InvalidRequest(field, f"must be {words} {limit}, got {error['input']}")
    return InvalidRequest(field, error["msg"])


def _allowed(image: str, patterns: Sequence[str]) -> str:
    """FREIGHT_ALLOWED_IMAGES: shell-style patterns; none set, any image."""
    if patterns and not any(fnmatch.fnmatchcase(image, p) for p in patterns):
        raise InvalidRequest(
            "image", f"{image!r} is not allowed here; allowed images: {', '.join(patterns)}"
        )
    return image
