"""The API's projection: job views and raw events in SQL, and `job_response` when a job ends."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pika
import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.api import schema
from services.api.files import record_outputs
from shared.bus import BrokerUnavailable, Message, Publisher
from shared.consumer import Logged
from shared.events import EventType
from shared.jobs import JobView, evolve

log = logging.getLogger(__name__)


def job_response(view: JobView) -> dict[str, Any]:
    """The message a subscriber of `job_response` receives when a job ends."""
    return {
        "job_id": view.job_id,
        "status": view.status.value,
        "owner": view.owner,
        "exit_code": view.exit_code,
        "reason": view.reason,
        "finished_at": view.finished_at.isoformat() if view.finished_at else None,
    }


class ApiProjection:
    consumer = "api"
    start_at = "first"
    offsets = schema.offsets
    dead_letters = schema.dead_letters

    def __init__(self, engine: sa.Engine, publisher: Publisher, response_exchange: str):
        self._engine = engine
        self._publisher = publisher
        self._response_exchange = response_exchange

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        """A whole batch in a handful of statements: the views it touches are read once, folded
        in memory, and written back once each (a rebuild is bound by this, not by the log)."""
        fresh = self._record_events(session, [b for b in batch if b.event.job_id is not None])
        if not fresh:
            return
        for event, _ in fresh:
            if event.type == EventType.JOB_OUTPUTS_SAVED:
                record_outputs(session, event)
        jobs = schema.jobs
        stored = {
            row.job_id: JobView.from_dict(row.view)
            for row in session.execute(
                sa.select(jobs.c.job_id, jobs.c.view).where(
                    jobs.c.job_id.in_({event.job_id for event, _ in fresh})
                )
            )
        }
        views: dict[str, JobView] = dict(stored)
        created_at: dict[str, int] = {}  # a new job's position: the event that created it
        finished: list[JobView] = []
        for event, position in fresh:
            assert event.job_id is not None
            before = views.get(event.job_id)
            after = evolve(before, event)
            if after is None or after == before:
                continue
            views[after.job_id] = after
            created_at.setdefault(after.job_id, position)
            if after.status.is_terminal and (before is None or not before.status.is_terminal):
                finished.append(after)
        self._write_views(session, stored, views, created_at)
        if finished:
            session.execute(
                schema.outbox.insert(),
                [{"job_id": view.job_id, "body": job_response(view)} for view in finished],
            )

    @staticmethod
    def _record_events(session: Session, batch: list[Logged]) -> list[Logged]:
        """Keep every event's body for `/jobs/{id}/events`; returns the ones not seen before (a
        publisher's retry may put the same event in the log twice)."""
        if not batch:
            return []
        events = schema.events
        seen = set(
            session.execute(
                sa.select(events.c.event_id).where(
                    events.c.event_id.in_([event.event_id for event, _ in batch])
                )
            ).scalars()
        )
        fresh = []
        for logged in batch:
            if logged.event.event_id not in seen:
                seen.add(logged.event.event_id)
                fresh.append(logged)
        if fresh:
            session.execute(
                events.insert(),
                [
                    {
                        "event_id": event.event_id,
                        "position": position,
                        "job_id": event.job_id,
                        "type": event.type,
                        "occurred_at": event.occurred_at,
                        "body": event.to_dict(),
                    }
                    for event, position in fresh
                ],
            )
        return fresh

    @staticmethod
    def _write_views(
        session: Session,
        stored: dict[str, JobView],
        views: dict[str, JobView],
        created_at: dict[str, int],
    ) -> None:
        jobs = schema.jobs
        changed = [view for job_id, view in views.items() if view is not stored.get(job_id)]
        inserts = [
            {
                "job_id": view.job_id,
                "position": created_at[view.job_id],
                "status": view.status.value,
                "view": view.to_dict(),
                "owner": view.owner,
            }
            for view in changed
            if view.job_id not in stored
        ]
        updates = [
            {"key": view.job_id, "status": view.status.value, "view": view.to_dict()}
            for view in changed
            if view.job_id in stored
        ]
        if inserts:
            session.execute(jobs.insert(), inserts)
        if updates:
            session.execute(
                jobs.update().where(jobs.c.job_id == sa.bindparam("key")),
                updates,
            )
        _count_jobs(session, stored, changed)

    def after_batch(self, caught_up: bool) -> None:
        self.announce_finished_jobs()

    def tick(self) -> None:
        self.announce_finished_jobs()

    def announce_finished_jobs(self) -> None:
        """Publish the outbox to `job_response`; a row is deleted only after its confirm."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(schema.outbox).order_by(schema.outbox.c.id).limit(500)
            ).all()
        if not rows:
            return
        try:
            self._publisher.publish([self._response_message(r.job_id, r.body) for r in rows])
        except BrokerUnavailable as exc:
            log.warning("job_response not yet published (%s); will retry", exc)
            return
        with self._engine.begin() as connection:
            connection.execute(
                schema.outbox.delete().where(schema.outbox.c.id.in_([r.id for r in rows]))
            )

    def _response_message(self, job_id: str, body: dict[str, Any]) -> Message:
        return Message(
            exchange=self._response_exchange,
            routing_key=job_id,
            body=json.dumps(body).encode(),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                correlation_id=job_id,
                message_id=f"{job_id}:{body['status']}",
            ),
        )


def _count_jobs(session: Session, stored: dict[str, JobView], changed: list[JobView]) -> None:
    """Keep `api_job_counts` in step with the views written: a new job counts once, a job that
    changed status moves from one count to the other."""
    deltas: Counter[tuple[str, str]] = Counter()
    for view in changed:
        before = stored.get(view.job_id)
        if before is not None and before.status == view.status:
            continue
        if before is not None:
            deltas[(before.owner, before.status.value)] -= 1
        deltas[(view.owner, view.status.value)] += 1
    deltas = Counter({key: n for key, n in deltas.items() if n})
    if not deltas:
        return
    counts = schema.job_counts
    existing = {
        (row.owner, row.status)
        for row in session.execute(
            sa.select(counts.c.owner, counts.c.status).where(
                counts.c.owner.in_({owner for owner, _ in deltas})
            )
        )
    }
    rows = [{"o": owner, "s": status, "d": n} for (owner, status), n in deltas.items()]
    if updates := [row for row in rows if (row["o"], row["s"]) in existing]:
        session.execute(
            counts.update()
            .where(counts.c.owner == sa.bindparam("o"), counts.c.status == sa.bindparam("s"))
            .values(jobs=counts.c.jobs + sa.bindparam("d")),
            updates,
        )
    if inserts := [row for row in rows if (row["o"], row["s"]) not in existing]:
        session.execute(
            counts.insert(),
            [{"owner": row["o"], "status": row["s"], "jobs": row["d"]} for row in inserts],
        )
