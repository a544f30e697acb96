"""Typed results of the SDK; each keeps the API's JSON in `raw` for scripts that want all of it.
`Submitted` and `Job` are the job model's (freight/jobspec.py), the one the API answers with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import PrivateAttr, ValidationError

from freight import jobspec
from freight.errors import FreightError

FINISHED = frozenset({"COMPLETE", "FAILED"})


def _time(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


class Submitted(jobspec.Submitted):
    """What `POST /jobs` answers: the job is in the log, not yet placed."""

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> Mapping[str, Any]:
        return self._raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Submitted:
        return _with_raw(_parsed(cls, raw), raw)


class Job(jobspec.Job):
    """A job as `GET /jobs/{id}` shows it: every field of freight.jobspec.Job."""

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def raw(self) -> Mapping[str, Any]:
        return self._raw

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "COMPLETE"

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Job:
        return _with_raw(_parsed(cls, raw), raw)


Answer = TypeVar("Answer", Submitted, Job)


def _parsed(model: type[Answer], raw: Mapping[str, Any]) -> Answer:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise FreightError(
            f"Freight answered with a {model.__name__} this client cannot read "
            f"({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}); "
            "is the client older than the server?"
        ) from None


def _with_raw(answer: Answer, raw: Mapping[str, Any]) -> Answer:
    answer._raw = dict(raw)  # private, so set even on a frozen model
    return answer


@dataclass(frozen=True)
class Event:
    """One entry of a job's history, as the event log recorded it."""

    event_id: str
    type: str
    job_id: str | None
    occurred_at: datetime | None
    producer: str
    data: Mapping[str, Any]
    schema_version: int = 1
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Event:
        return cls(
            event_id=raw.get("event_id", ""),
            type=raw["type"],
            job_id=raw.get("job_id"),
            occurred_at=_time(raw.get("occurred_at")),
            producer=raw.get("producer", ""),
            data=dict(raw.get("data") or {}),
            schema_version=raw.get("schema_version", 1),
            raw=dict(raw),
        )


@dataclass(frozen=True)
class FileEntry:
    """One top-level entry of a directory in a job's file system."""

    name: str
    path: str
    type: str
    size: int | None = None
    mode: str | None = None
    modified: datetime | None = None
    target: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> FileEntry:
        return cls(
            name=raw["name"],
            path=raw.get("path", raw["name"]),
            type=raw.get("type", "file"),
            size=raw.get("size"),
            mode=raw.get("mode"),
            modified=_time(raw.get("modified")),
            target=raw.get("target"),
            raw=dict(raw),
        )
