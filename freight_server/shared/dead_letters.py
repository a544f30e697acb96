"""Dead letters: events a projection could not apply, kept with their error.

An operator lists them and asks for a replay after an upgrade (`freight dead-letters`); only the
running consumer writes its projection, so the command marks rows and the consumer does the
replaying between batches (freight_server/shared/consumer.py). Rows older than the retention are
pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa

from freight_server.shared.events import MalformedEvent, decode


@dataclass(frozen=True)
class DeadLetter:
    id: int
    consumer: str
    position: int
    recorded_at: datetime
    error: str
    replay_requested_at: datetime | None
    event_type: str | None  # None when the body is not an event at all
    job_id: str | None

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> DeadLetter:
        event_type, job_id = describe(row.body)
        return cls(
            id=row.id,
            consumer=row.consumer,
            position=row.position,
            recorded_at=row.recorded_at,
            error=row.error,
            replay_requested_at=row.replay_requested_at,
            event_type=event_type,
            job_id=job_id,
        )


def describe(body: bytes) -> tuple[str | None, str | None]:
    """The event's type and job id, if its envelope decodes."""
    try:
        event = decode(body)
    except MalformedEvent:
        return None, None
    return event.type, event.job_id


def list_dead_letters(connection: sa.Connection, table: sa.Table) -> list[DeadLetter]:
    rows = connection.execute(sa.select(table).order_by(table.c.id)).all()
    return [DeadLetter.from_row(row) for row in rows]


def request_replay(
    connection: sa.Connection, table: sa.Table, ids: Sequence[int] | None, now: datetime
) -> list[int]:
    """Mark dead letters (all of them when `ids` is None) for their consumer to retry; returns
    the ids marked."""
    query = sa.update(table).values(replay_requested_at=now).returning(table.c.id)
    if ids is not None:
        query = query.where(table.c.id.in_(ids))
    return sorted(connection.execute(query).scalars())


def requested_replays(
    connection: sa.Connection, table: sa.Table, consumer: str
) -> list[sa.Row[Any]]:
    return list(
        connection.execute(
            sa.select(table)
            .where(table.c.consumer == consumer, table.c.replay_requested_at.is_not(None))
            .order_by(table.c.position)
        ).all()
    )


def record_failed_replay(
    connection: sa.Connection, table: sa.Table, letter_id: int, error: str, now: datetime
) -> None:
    """Keep the new error; `recorded_at` restarts so a fresh failure is not pruned at once."""
    connection.execute(
        sa.update(table)
        .where(table.c.id == letter_id)
        .values(error=error, recorded_at=now, replay_requested_at=None)
    )


def prune_dead_letters(
    connection: sa.Connection, table: sa.Table, consumer: str, recorded_before: datetime
) -> int:
    result = connection.execute(
        sa.delete(table).where(table.c.consumer == consumer, table.c.recorded_at < recorded_before)
    )
    return cast(sa.CursorResult[Any], result).rowcount
