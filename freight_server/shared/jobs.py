"""Job state as a pure fold of the job's events; every service uses this one function.

`evolve(view, event)` applies one event; `fold(events)` applies them all. Both tolerate
duplicates and late events: an event that does not fit the job's current state (a second
assignment of the same attempt, a start or an end from a superseded attempt, a cancel after the
end) leaves the view unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

# The five states users see are part of the job model the API and the SDK share.
from freight.jobspec import Status
from freight_server.shared.events import Event, EventType

ACTIVE = (Status.PENDING, Status.RUNNING)
UNFINISHED = (Status.QUEUED, Status.PENDING, Status.RUNNING)


class Outcome(StrEnum):
    """How an attempt ended. Only SUCCEEDED completes a job; only LOST may be retried."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the command exited non-zero: the user's failure
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"
    OUT_OF_MEMORY = "out of memory"
    LOST = "runner lost"
    ERROR = "error"  # Freight or the engine failed: ours, not the command's


@dataclass(frozen=True)
class JobView:
    job_id: str
    status: Status
    command: str
    image: str
    created_at: datetime
    name: str | None = None  # the user's short name for it
    labels: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0  # higher goes first (freight_server/services/scheduler/fairshare.py)
    gpus: int | None = None
    gpu_memory: int | None = None  # MiB each assigned GPU must have
    cpus: float | None = None
    memory: int | None = None  # MiB, the container's limit
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    max_attempts: int = 1
    files: tuple[Mapping[str, Any], ...] = ()
    attempt: int = 0
    runner: str | None = None
    assigned_gpus: tuple[Mapping[str, Any], ...] = ()
    assigned_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    cancel_requested: bool = False
    # Who submitted it (a token's user name); jobs from local mode, or from before owners were
    # recorded, belong to "anonymous", whom only admins see.
    owner: str = "anonymous"
    # Environment values sealed with FREIGHT_SECRET_KEY (freight_server/shared/secret_env.py): only
    # a runner
    # opens them, when it creates the container.
    secret_env: Mapping[str, str] = field(default_factory=dict)
    # The GA4GH TES task this job runs, as it was created
    # (freight_server/services/api/tes_model.py); None for a
    # job submitted through /jobs, and for every job from before TES.
    tes: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: its deep copy was most of a page's time.
        out = {name: getattr(self, name) for name in _VIEW_FIELDS}
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        out["env"] = dict(self.env)
        out["labels"] = dict(self.labels)
        out["secret_env"] = dict(self.secret_env)
        out["files"] = [dict(f) for f in self.files]
        out["assigned_gpus"] = [dict(g) for g in self.assigned_gpus]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JobView:
        values = dict(raw)
        for key in ("created_at", "assigned_at", "started_at", "finished_at"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        values["status"] = Status(values["status"])
        values["outcome"] = Outcome(values["outcome"]) if values.get("outcome") else None
        values["files"] = tuple(values.get("files") or ())
        values["assigned_gpus"] = tuple(values.get("assigned_gpus") or ())
        return cls(**values)


_VIEW_FIELDS = tuple(f.name for f in fields(JobView))


def fold(events: Iterable[Event]) -> JobView | None:
    view: JobView | None = None
    for event in events:
        view = evolve(view, event)
    return view


def evolve(view: JobView | None, event: Event) -> JobView | None:
    if event.type == EventType.JOB_SUBMITTED:
        return view if view is not None else _submitted(event)
    if view is None or view.status.is_terminal:
        return view
    data = event.data
    match event.type:
        case EventType.JOB_WAITING:
            if view.status == Status.QUEUED:
                return replace(view, reason=data.get("reason"))
        case EventType.JOB_CANCEL_REQUESTED:
            if view.status in (Status.QUEUED, Status.PENDING):
                return _ended(view, event, Outcome.CANCELLED, "cancelled", exit_code=None)
            return replace(view, cancel_requested=True)
        case EventType.JOB_ASSIGNED:
            if view.status == Status.QUEUED and data.get("attempt") == view.attempt + 1:
                return replace(
                    view,
                    status=Status.PENDING,
                    attempt=data["attempt"],
                    runner=data.get("runner"),
                    assigned_gpus=tuple(data.get("gpus") or ()),
                    assigned_at=event.occurred_at,
                    reason=None,  # why it waited no longer holds
                )
        case EventType.JOB_STARTED:
            if view.status == Status.PENDING and data.get("attempt") == view.attempt:
                return replace(view, status=Status.RUNNING, started_at=event.occurred_at)
        case EventType.JOB_FINISHED:
            if view.status in ACTIVE and data.get("attempt") == view.attempt:
                return _finished(view, event)
    return view


def _submitted(event: Event) -> JobView:
    data = event.data
    return JobView(
        job_id=str(event.job_id),
        status=Status.QUEUED,
        command=data["command"],
        image=data["image"],
        created_at=event.occurred_at,
        name=data.get("name"),
        labels=dict(data.get("labels") or {}),
        priority=int(data.get("priority") or 0),
        gpus=data.get("gpus"),
        gpu_memory=data.get("gpu_memory"),
        cpus=data.get("cpus"),
        memory=data.get("memory"),
        env=dict(data.get("env") or {}),
        timeout=data.get("timeout"),
        max_attempts=int(data.get("max_attempts") or 1),
        files=tuple(data.get("files") or ()),
        owner=str(data.get("owner") or "anonymous"),
        secret_env=dict(data.get("secret_env") or {}),
        tes=data.get("tes"),
    )


def _finished(view: JobView, event: Event) -> JobView:
    data = event.data
    outcome = Outcome(data.get("outcome", Outcome.ERROR))
    if outcome == Outcome.LOST and view.cancel_requested:
        # Its runner vanished while it was being stopped: the cancel is what ends it.
        return _ended(view, event, Outcome.CANCELLED, "cancelled", exit_code=None)
    if outcome == Outcome.LOST and view.attempt < view.max_attempts:
        return replace(
            view,
            status=Status.QUEUED,
            runner=None,
            assigned_gpus=(),
            reason=f"runner lost; retrying (attempt {view.attempt + 1} of {view.max_attempts})",
        )
    if outcome == Outcome.SUCCEEDED:
        return replace(
            view,
            status=Status.COMPLETE,
            outcome=outcome,
            exit_code=data.get("exit_code"),
            reason=None,
            finished_at=event.occurred_at,
        )
    reason = data.get("reason") or outcome.value
    return _ended(view, event, outcome, reason, exit_code=data.get("exit_code"))


def _ended(
    view: JobView, event: Event, outcome: Outcome, reason: str, exit_code: int | None
) -> JobView:
    return replace(
        view,
        status=Status.FAILED,
        outcome=outcome,
        reason=reason,
        exit_code=exit_code,
        finished_at=event.occurred_at,
    )
