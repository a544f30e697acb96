"""Typed results of the SDK; each keeps the API's JSON in `raw` for scripts that want all of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FINISHED = frozenset({"COMPLETE", "FAILED"})


def _time(value: Any) -> datetime | None:
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


@dataclass(frozen=True)
class Submitted:
    """What `POST /jobs` answers: the job is in the log, not yet placed."""

    job_id: str
    command: str
    status: str
    gpus: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Submitted:
        return cls(
            job_id=raw["job_id"],
            command=raw.get("command", ""),
            status=raw.get("status", "QUEUED"),
            gpus=raw.get("gpus"),
            raw=dict(raw),
        )


@dataclass(frozen=True)
class Job:
    job_id: str
    status: str
    command: str = ""
    image: str | None = None
    gpus: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    max_attempts: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    runner: str | None = None
    attempt: int | None = None
    assigned_gpus: tuple[Mapping[str, Any], ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status == "COMPLETE"

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Job:
        return cls(
            job_id=raw["job_id"],
            status=raw["status"],
            command=raw.get("command") or "",
            image=raw.get("image"),
            gpus=raw.get("gpus"),
            env=dict(raw.get("env") or {}),
            timeout=raw.get("timeout"),
            max_attempts=raw.get("max_attempts"),
            created_at=_time(raw.get("created_at")),
            started_at=_time(raw.get("started_at")),
            finished_at=_time(raw.get("finished_at")),
            exit_code=raw.get("exit_code"),
            reason=raw.get("reason"),
            runner=raw.get("runner"),
            attempt=raw.get("attempt"),
            assigned_gpus=tuple(raw.get("assigned_gpus") or ()),
            raw=dict(raw),
        )


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
