"""The API's projection: job views and raw events in SQL, and `job_response` when a job ends."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import pika
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.api import schema
from freight_server.services.api.owner_files import record_owner_files
from freight_server.services.api.saved_files import check_saved
from freight_server.services.api.usage import record_usage
from freight_server.shared.bus import BrokerUnavailable, Message, Publisher, Unroutable
from freight_server.shared.consumer import Logged
from freight_server.shared.events import EventType
from freight_server.shared.jobs import JobView
from freight_server.shared.views import ViewCache, ViewChange, fold_views, write_views

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


class Chore(Protocol):
    def run_if_due(self) -> None: ...


class ApiProjection:
    consumer = "api"
    start_at = "first"
    offsets = schema.offsets
    dead_letters = schema.dead_letters

    def __init__(
        self,
        engine: sa.Engine,
        publisher: Publisher,
        response_exchange: str,
        chores: Sequence[Chore] = (),
    ):
        self._engine = engine
        self._publisher = publisher
        self._response_exchange = response_exchange
        # Periodic work of the projector alone: snapshots of the log (snapshots.py), quotas
        # from the tokens file into the log (quotas.py).
        self._chores = chores
        # Whether a batch may have queued responses since the outbox was last emptied (the
        # tick looks every second regardless, and at the start).
        self._outbox_filled = True
        self._views = ViewCache()  # the jobs' views as this projection last committed them

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        """Keep the batch's events, fold its jobs' views (freight_server/shared/views.py), keep the
        counts and each owner's files (freight_server/services/api/owner_files.py), and queue
        every job that ended for `job_response`."""
        fresh = self._record_events(session, [b for b in batch if b.event.job_id is not None])
        if not fresh:
            return
        for event, _ in fresh:
            if event.type == EventType.JOB_OUTPUTS_SAVED:
                check_saved(event.data)  # its files are read from it
        changes = fold_views(session, schema.jobs, fresh, cache=self._views)
        write_views(session, schema.jobs, changes, _job_columns, created=_job_created)
        record_owner_files(session, fresh, changes)
        record_usage(session, changes)
        _count_jobs(session, changes)
        finished = [
            c.after
            for c in changes
            if c.after.status.is_terminal and (c.before is None or not c.before.status.is_terminal)
        ]
        if finished:
            session.execute(
                _QUEUE_RESPONSE,
                [{"job_id": view.job_id, "body": job_response(view)} for view in finished],
            )
            self._outbox_filled = True

    @staticmethod
    def _record_events(session: Session, batch: list[Logged]) -> list[Logged]:
        """Keep every event's body for `/jobs/{id}/events`; returns the ones not seen before (a
        publisher's retry may put the same event in the log twice)."""
        if not batch:
            return []
        seen = set(
            session.execute(_SEEN, {"ids": [event.event_id for event, _ in batch]}).scalars()
        )
        fresh = []
        for logged in batch:
            if logged.event.event_id not in seen:
                seen.add(logged.event.event_id)
                fresh.append(logged)
        if fresh:
            session.execute(
                _KEEP_EVENTS,
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

    def after_batch(self, caught_up: bool) -> None:
        if self._outbox_filled:  # else the outbox holds nothing the last look left
            self.announce_finished_jobs()

    def tick(self) -> None:
        self.announce_finished_jobs()
        for chore in self._chores:
            chore.run_if_due()

    def announce_finished_jobs(self) -> None:
        """Publish the outbox to `job_response`; a row is deleted only after its confirm."""
        self._outbox_filled = False
        with self._engine.connect() as connection:
            rows = connection.execute(_NEXT_RESPONSES).all()
        if not rows:
            return
        try:
            self._publish_routed([self._response_message(r.job_id, r.body) for r in rows])
        except BrokerUnavailable as exc:
            log.warning("job_response not yet published (%s); will retry", exc)
            self._outbox_filled = True
            return
        with self._engine.begin() as connection:
            connection.execute(_RESPONDED, {"ids": [r.id for r in rows]})
        self._outbox_filled = len(rows) == OUTBOX_BATCH

    def _publish_routed(self, messages: list[Message]) -> None:
        """An unroutable response means an operator deleted `job_response`'s queue or binding:
        declare them again and publish once more, rather than let the responses go nowhere."""
        try:
            self._publisher.publish(messages)
        except Unroutable as exc:
            log.warning("job_response unroutable (%s): declaring its queue and binding again", exc)
            self._publisher.declare_topology()
            self._publisher.publish(messages)

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


OUTBOX_BATCH = 500  # responses published, and confirmed, together

# Built once: statements built again for every batch cost the projection more than running them.
_SEEN = sa.select(schema.events.c.event_id).where(
    schema.events.c.event_id.in_(sa.bindparam("ids", expanding=True))
)
_KEEP_EVENTS = schema.events.insert()
_QUEUE_RESPONSE = schema.outbox.insert()
_NEXT_RESPONSES = sa.select(schema.outbox).order_by(schema.outbox.c.id).limit(OUTBOX_BATCH)
_RESPONDED = schema.outbox.delete().where(
    schema.outbox.c.id.in_(sa.bindparam("ids", expanding=True))
)
_COUNTED = sa.select(schema.job_counts.c.owner, schema.job_counts.c.status).where(
    schema.job_counts.c.owner.in_(sa.bindparam("owners", expanding=True))
)
_COUNT_MORE = (
    schema.job_counts.update()
    .where(
        schema.job_counts.c.owner == sa.bindparam("o"),
        schema.job_counts.c.status == sa.bindparam("s"),
    )
    .values(jobs=schema.job_counts.c.jobs + sa.bindparam("d"))
)
_COUNT_NEW = schema.job_counts.insert()


def _job_columns(view: JobView) -> dict[str, Any]:
    return {"status": view.status.value, "view": view.to_dict()}


def _job_created(change: ViewChange) -> dict[str, Any]:
    return {"position": change.position, "owner": change.after.owner}


def _count_jobs(session: Session, changes: Sequence[ViewChange]) -> None:
    """Keep `api_job_counts` in step with the views written: a new job counts once, a job that
    changed status moves from one count to the other."""
    deltas: Counter[tuple[str, str]] = Counter()
    for change in changes:
        before, after = change.before, change.after
        if before is not None and before.status == after.status:
            continue
        if before is not None:
            deltas[(before.owner, before.status.value)] -= 1
        deltas[(after.owner, after.status.value)] += 1
    deltas = Counter({key: n for key, n in deltas.items() if n})
    if not deltas:
        return
    owners = sorted({owner for owner, _ in deltas})
    existing = {(row.owner, row.status) for row in session.execute(_COUNTED, {"owners": owners})}
    rows = [{"o": owner, "s": status, "d": n} for (owner, status), n in deltas.items()]
    if updates := [row for row in rows if (row["o"], row["s"]) in existing]:
        session.execute(_COUNT_MORE, updates)
    if inserts := [row for row in rows if (row["o"], row["s"]) not in existing]:
        session.execute(
            _COUNT_NEW,
            [{"owner": row["o"], "status": row["s"], "jobs": row["d"]} for row in inserts],
        )
