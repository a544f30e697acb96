"""The runners as the API knows them: each one's latest heartbeat, for /metrics and
`GET /runners`.

A decorator around the API's job projection, so that projection stays about jobs: it folds
`RunnerLost` into `api_runners` in the same transaction, then hands every event on; between
batches it records the heartbeats heard on their own stream (freight_server/shared/heartbeats.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.api import schema
from freight_server.shared.consumer import Logged, Projection
from freight_server.shared.events import Event, EventType


class HeartbeatSource(Protocol):
    def take(self) -> list[Event]: ...


class RunnerBoard:
    def __init__(self, jobs: Projection, engine: sa.Engine, heartbeats: HeartbeatSource):
        self._jobs = jobs
        self._engine = engine
        self._heartbeats = heartbeats
        self.consumer = jobs.consumer
        self.start_at = jobs.start_at
        self.offsets = jobs.offsets
        self.dead_letters = jobs.dead_letters

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        for event, _ in batch:
            if event.type == EventType.RUNNER_HEARTBEAT:  # from runners of before their stream
                record_heartbeat(session, event)
            elif event.type == EventType.RUNNER_LOST:
                session.execute(
                    schema.runners.update()
                    .where(schema.runners.c.runner_id == str(event.data["runner"]))
                    .values(lost=True)
                )
        self._jobs.apply_batch(session, batch)

    def after_batch(self, caught_up: bool) -> None:
        self._jobs.after_batch(caught_up)

    def tick(self) -> None:
        heard = self._heartbeats.take()
        if heard:
            with Session(self._engine) as session, session.begin():
                for heartbeat in heard:
                    record_heartbeat(session, heartbeat)
        self._jobs.tick()


def record_heartbeat(session: Session, event: Event) -> None:
    runners = schema.runners
    runner_id = str(event.data["runner"])
    values = {"last_seen": event.occurred_at, "lost": False, "heartbeat": dict(event.data)}
    last_seen = session.execute(
        sa.select(runners.c.last_seen).where(runners.c.runner_id == runner_id)
    ).scalar_one_or_none()
    if last_seen is None:
        session.execute(runners.insert().values(runner_id=runner_id, **values))
    elif as_utc(last_seen) <= event.occurred_at:
        session.execute(runners.update().where(runners.c.runner_id == runner_id).values(**values))


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time Freight stores is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunnerUse:
    """A runner's capacity and what its running jobs hold, as its last heartbeat told."""

    runner_id: str
    slots: int
    slots_used: int
    gpus: int
    gpus_used: int

    @classmethod
    def from_heartbeat(cls, runner_id: str, heartbeat: Mapping[str, Any]) -> RunnerUse:
        slots = int(heartbeat.get("slots") or 0)
        gpus = _count(heartbeat.get("gpus"))
        free = heartbeat.get("free")
        if isinstance(free, Mapping):
            free_slots = int(free.get("slots") or 0)
            free_gpus = _count(free.get("gpus"))
        else:  # a heartbeat from before `free` was reported
            free_slots = max(0, slots - len(heartbeat.get("running") or ()))
            free_gpus = gpus
        return cls(runner_id, slots, slots - free_slots, gpus, max(0, gpus - free_gpus))


def _count(gpus: Any) -> int:
    """GPUs are reported as a list (of descriptions or ids) or as a number."""
    if isinstance(gpus, list | tuple):
        return len(gpus)
    return int(gpus or 0)


# -- `GET /runners`: the runners as a dashboard shows them ----------------------------------------


class RunnerStore:
    """Reads of `api_runners`, and of which user owns the jobs a runner reports running."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def all(self) -> list[Any]:
        with self._engine.connect() as connection:
            return list(
                connection.execute(
                    sa.select(schema.runners).order_by(schema.runners.c.runner_id)
                ).all()
            )

    def owners(self, job_ids: Iterable[str]) -> dict[str, str]:
        wanted = set(job_ids)
        if not wanted:
            return {}
        jobs = schema.jobs
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(jobs.c.job_id, jobs.c.owner).where(jobs.c.job_id.in_(wanted))
            ).all()
        return {row.job_id: row.owner for row in rows}


def runner_state(lost: bool, last_seen: datetime, now: datetime, deadline: float) -> str:
    """`live` (heard within the deadline), `silent` (not heard since, not yet declared lost),
    or `lost` (the scheduler declared it so; a heartbeat since makes it live again)."""
    if lost:
        return "lost"
    return "silent" if (now - as_utc(last_seen)).total_seconds() > deadline else "live"


def running_attempts(heartbeat: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(job id, attempt) of what the heartbeat reports running, as `job/attempt` strings."""
    attempts = []
    for entry in heartbeat.get("running") or ():
        job_id, _, attempt = str(entry).rpartition("/")
        if job_id and attempt.isdigit():
            attempts.append((job_id, int(attempt)))
    return attempts


def present_runner(
    row: Any, now: datetime, deadline: float, may_see: Callable[[str], bool]
) -> dict[str, Any]:
    """A runner as its last heartbeat described it; of its jobs, only those `may_see` allows."""
    heartbeat: Mapping[str, Any] = row.heartbeat or {}
    free = heartbeat.get("free")
    free = free if isinstance(free, Mapping) else {}
    use = RunnerUse.from_heartbeat(row.runner_id, heartbeat)
    free_gpus = free.get("gpus")
    free_uuids = set(free_gpus) if isinstance(free_gpus, list | tuple) else None
    gpus = [
        {
            "index": gpu.get("index"),
            "uuid": gpu.get("uuid"),
            "name": gpu.get("name"),
            "memory_mb": gpu.get("memory_mb"),
            "held": free_uuids is not None and gpu.get("uuid") not in free_uuids,
        }
        for gpu in heartbeat.get("gpus") or ()
        if isinstance(gpu, Mapping)
    ]
    return {
        "runner_id": row.runner_id,
        "state": runner_state(row.lost, row.last_seen, now, deadline),
        "last_heartbeat": as_utc(row.last_seen).isoformat(),
        "slots": use.slots,
        "slots_free": use.slots - use.slots_used,
        "gpus": gpus,
        "cpus": heartbeat.get("cpus"),
        "cpus_free": free.get("cpus"),
        "memory_mb": heartbeat.get("memory_mb"),
        "memory_free_mb": free.get("memory_mb"),
        "jobs": [
            {"job_id": job_id, "attempt": attempt}
            for job_id, attempt in running_attempts(heartbeat)
            if may_see(job_id)
        ],
    }
