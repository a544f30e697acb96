"""The API's projection: job views and raw events in SQL, and `job_response` when a job ends."""

from __future__ import annotations

import json
import logging
from typing import Any

import pika
import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.api import schema
from services.api.files import record_outputs
from shared.bus import BrokerUnavailable, Message, Publisher
from shared.events import Event, EventType
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

    def apply(self, session: Session, event: Event, position: int) -> None:
        if event.job_id is None:
            return  # runner events are the scheduler's concern
        if session.execute(
            sa.select(schema.events.c.event_id).where(schema.events.c.event_id == event.event_id)
        ).first():
            return  # the same event published twice (a publisher retry)
        session.execute(
            schema.events.insert().values(
                event_id=event.event_id,
                position=position,
                job_id=event.job_id,
                type=event.type,
                occurred_at=event.occurred_at,
                body=event.to_dict(),
            )
        )
        if event.type == EventType.JOB_OUTPUTS_SAVED:
            record_outputs(session, event)
        row = session.execute(
            sa.select(schema.jobs.c.view).where(schema.jobs.c.job_id == event.job_id)
        ).first()
        before = JobView.from_dict(row.view) if row else None
        after = evolve(before, event)
        if after is None or after == before:
            return
        if before is None:
            session.execute(
                schema.jobs.insert().values(
                    job_id=after.job_id,
                    position=position,
                    status=after.status.value,
                    view=after.to_dict(),
                    owner=after.owner,
                )
            )
        else:
            session.execute(
                schema.jobs.update()
                .where(schema.jobs.c.job_id == after.job_id)
                .values(status=after.status.value, view=after.to_dict())
            )
        if after.status.is_terminal and (before is None or not before.status.is_terminal):
            session.execute(
                schema.outbox.insert().values(job_id=after.job_id, body=job_response(after))
            )

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
