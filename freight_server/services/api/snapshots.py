"""The API's projector takes the log's snapshots (freight_server/shared/snapshots.py): it alone
keeps every raw event (`api_events`), so it can write down, at the position its tables are at,
the events of every job a service may still need.

Taken only while the events stream has a retention (without one nothing is ever truncated),
soon after the projector starts and then every FREIGHT_SNAPSHOT_INTERVAL, on a thread of its
own: the projection goes on meanwhile. Several API databases each take theirs; any complete one
will do for a reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from freight_server.services.api import schema
from freight_server.services.api.projection import ApiProjection
from freight_server.shared.bus import BrokerUnavailable, Publisher, Topology
from freight_server.shared.jobs import UNFINISHED
from freight_server.shared.snapshots import snapshot_messages

log = logging.getLogger(__name__)

# Parts published per confirm: a few MiB at a time.
PARTS_PER_PUBLISH = 8


class SnapshotTaker:
    def __init__(
        self,
        engine: sa.Engine,
        publisher: Publisher,
        topology: Topology,
        interval: float,
        retention: timedelta,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._engine = engine
        self._publisher = publisher
        self._topology = topology
        self._interval = interval
        self._retention = retention  # how long an ended job is still needed (its files')
        self._clock = clock
        self._monotonic = monotonic
        self._next = 0.0  # the first soon after the start
        self._thread: threading.Thread | None = None

    def run_if_due(self) -> None:
        if not self._topology.log_bounds() or self._monotonic() < self._next:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._next = self._monotonic() + self._interval
        self._thread = threading.Thread(target=self._take_quietly, name="api-snapshot", daemon=True)
        self._thread.start()

    def _take_quietly(self) -> None:
        try:
            self.take()
        except (BrokerUnavailable, sa.exc.SQLAlchemyError) as exc:
            log.warning("snapshot not taken: %r; retrying at the next interval", exc)

    def take(self) -> int | None:
        """Write a snapshot at the position the API's tables are at; returns that position
        (None before the projection applied anything)."""
        # One read transaction: the rows are exactly those of the events up to `position`.
        with self._engine.connect() as connection, connection.begin():
            position = connection.execute(
                sa.select(ApiProjection.offsets.c.position).where(
                    ApiProjection.offsets.c.consumer == ApiProjection.consumer
                )
            ).scalar_one_or_none()
            if position is None:
                return None
            events = self._needed_events(connection)
            messages = snapshot_messages(self._topology, position, events)
            parts = 0
            while batch := [m for _, m in zip(range(PARTS_PER_PUBLISH), messages, strict=False)]:
                self._publisher.publish(batch)
                parts += len(batch)
        log.info("snapshot of the log at offset %d taken (%d parts)", position, parts)
        return position

    def _needed_events(self, connection: sa.Connection) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """The events of the unfinished jobs and of those ended within the retention, in log
        order."""
        jobs, events = schema.jobs, schema.events
        ended_since = (self._clock() - self._retention).isoformat()
        needed = sa.select(jobs.c.job_id).where(
            sa.or_(
                jobs.c.status.in_([s.value for s in UNFINISHED]),
                jobs.c.view["finished_at"].as_string() >= ended_since,
            )
        )
        rows = connection.execution_options(yield_per=1000).execute(
            sa.select(events.c.position, events.c.body)
            .where(events.c.job_id.in_(needed))
            .order_by(events.c.position)
        )
        for row in rows:
            yield row.position, row.body
