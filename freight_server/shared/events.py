"""The event envelope: every fact Freight knows is one of these, appended to the log.

Events are immutable and named in the past tense. The wire format is JSON; a reader upcasts an
old schema version to the current one instead of reinterpreting it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

SCHEMA_VERSION = 1


class EventType(StrEnum):
    JOB_SUBMITTED = "JobSubmitted"
    JOB_CANCEL_REQUESTED = "JobCancelRequested"
    JOB_WAITING = "JobWaiting"
    JOB_ASSIGNED = "JobAssigned"
    JOB_STARTED = "JobStarted"
    JOB_FINISHED = "JobFinished"
    JOB_OUTPUTS_SAVED = "JobOutputsSaved"
    RUNNER_HEARTBEAT = "RunnerHeartbeat"
    RUNNER_LOST = "RunnerLost"
    RUNNER_STARTED = "RunnerStarted"
    OWNER_QUOTA_SET = "OwnerQuotaSet"
    SCHEDULER_STARTED = "SchedulerStarted"
    FILESTORE_STARTED = "FilestoreStarted"


class MalformedEvent(ValueError):
    """A message on the log that is not a valid event envelope."""


@dataclass(frozen=True)
class Event:
    type: str
    data: Mapping[str, Any]
    job_id: str | None
    producer: str
    occurred_at: datetime
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "job_id": self.job_id,
            "occurred_at": self.occurred_at.isoformat(),
            "producer": self.producer,
            "schema_version": self.schema_version,
            "data": dict(self.data),
        }


class Logged(NamedTuple):
    """An event and its position (offset) in the log."""

    event: Event
    position: int


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EventFactory:
    """Stamps new events with their producer, time and id (clock and ids injectable for tests)."""

    producer: str
    clock: Callable[[], datetime] = utcnow
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())

    def __call__(self, type: EventType, job_id: str | None = None, **data: Any) -> Event:
        return Event(
            type=type.value,
            data=data,
            job_id=job_id,
            producer=self.producer,
            occurred_at=self.clock(),
            event_id=self.new_id(),
        )


def encode(event: Event) -> bytes:
    return json.dumps(event.to_dict(), separators=(",", ":")).encode()


def decode(body: bytes) -> Event:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedEvent("an event must be a JSON object")
    raw = upcast(raw)
    try:
        data = raw["data"]
        if not isinstance(data, dict):
            raise MalformedEvent("'data' must be an object")
        occurred_at = datetime.fromisoformat(raw["occurred_at"])
        if occurred_at.tzinfo is None:
            # Folds order and compare times across hosts: a time without its zone is ambiguous.
            raise MalformedEvent("'occurred_at' must carry its time zone")
        return Event(
            event_id=str(raw["event_id"]),
            type=str(raw["type"]),
            job_id=None if raw.get("job_id") is None else str(raw["job_id"]),
            occurred_at=occurred_at,
            producer=str(raw["producer"]),
            schema_version=int(raw["schema_version"]),
            data=data,
        )
    except KeyError as exc:
        raise MalformedEvent(f"missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        raise MalformedEvent(str(exc)) from None


# Each entry turns version N into N+1; add one when an event's shape changes.
UPCASTERS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def upcast(raw: dict[str, Any]) -> dict[str, Any]:
    version = raw.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise MalformedEvent(f"unknown schema_version {version!r}")
    while version < SCHEMA_VERSION:
        raw = UPCASTERS[version](raw)
        version = raw["schema_version"]
    return raw
