"""Consume the event log into a projection, exactly once per event.

A consumer reads the stream from its stored position, applies each batch of events to its
database and stores the new position in the same transaction, then acks. A crash anywhere
replays from the stored position; positions at or below it are skipped, so nothing is applied
twice or skipped. An event that cannot be decoded or applied is dead-lettered with its error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import pika
import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.bus import AMQP_ERRORS, Topology, connect
from shared.db import ConcurrencyError
from shared.events import Event, MalformedEvent, decode, utcnow

log = logging.getLogger(__name__)


class Logged(NamedTuple):
    """An event and its position (offset) in the log."""

    event: Event
    position: int


class Projection(Protocol):
    consumer: str  # this projection's name in the offsets table
    start_at: str  # where a new consumer begins: "first" (all history) or "next" (from now)
    offsets: sa.Table
    dead_letters: sa.Table

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        """Fold these events, in log order, into the projection's tables (one transaction)."""

    def after_batch(self, caught_up: bool) -> None:
        """Act on the committed state (place jobs, start containers); runs between batches."""

    def tick(self) -> None:
        """Periodic work that does not wait for an event (heartbeats, deadlines)."""


# What an event that cannot be folded raises (a database error is not the event's fault).
BAD_EVENT = (MalformedEvent, LookupError, TypeError, ValueError)


class _BadEvent(Exception):
    """An event of the batch could not be decoded or applied."""


@dataclass
class _Delivery:
    tag: int
    position: int
    body: bytes


class StreamConsumer:
    def __init__(
        self,
        amqp_url: str,
        topology: Topology,
        engine: sa.Engine,
        projection: Projection,
        *,
        batch_size: int = 500,
        tick_interval: float = 1.0,
        on_applied: Callable[[int], None] | None = None,
        on_committed: Callable[[Sequence[Event]], None] | None = None,
    ):
        self._url = amqp_url
        self._topology = topology
        self._engine = engine
        self._projection = projection
        self._batch_size = batch_size
        self._tick_interval = tick_interval
        self._on_applied = on_applied
        self._on_committed = on_committed  # metrics: sees each committed event once
        self._position: int | None = None
        self._buffer: list[_Delivery] = []
        self.dead_lettered = 0
        self.connected = threading.Event()

    @property
    def position(self) -> int | None:
        return self._position

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set, reconnecting with backoff whenever RabbitMQ goes away."""
        backoff = 0.2
        while not stop.is_set():
            try:
                self._consume(stop)
            except (*AMQP_ERRORS, ConcurrencyError, sa.exc.OperationalError) as exc:
                if self.connected.is_set():
                    backoff = 0.2  # it worked for a while: this is a new outage
                self.connected.clear()
                log.warning(
                    "%s: consumer interrupted (%r); retrying in %.1fs",
                    self._projection.consumer,
                    exc,
                    backoff,
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _consume(self, stop: threading.Event) -> None:
        self._buffer = []
        self._position = self._stored_position()
        start: Any = self._projection.start_at if self._position is None else self._position + 1
        connection = connect(
            self._url, self._topology.connection_name(f"{self._projection.consumer}-consumer")
        )
        try:
            channel = connection.channel()
            self._topology.declare(channel)
            channel.basic_qos(prefetch_count=self._batch_size)
            channel.basic_consume(
                self._topology.events_stream,
                self._on_message,
                arguments={"x-stream-offset": start},
            )
            self.connected.set()
            log.info(
                "%s: consuming %s from %s",
                self._projection.consumer,
                self._topology.events_stream,
                start,
            )
            next_tick = time.monotonic()
            while not stop.is_set():
                wait = max(0.0, min(next_tick - time.monotonic(), 0.5))
                connection.process_data_events(time_limit=wait)
                self._drain_ready(connection)
                if self._buffer:
                    batch, self._buffer = self._buffer, []
                    try:
                        self._apply(batch)
                    except sa.exc.IntegrityError as exc:
                        if not self._offset_moved():
                            raise  # the projection's own error, not a conflict
                        raise ConcurrencyError(
                            f"{self._projection.consumer}: another process applied these first"
                        ) from exc
                    channel.basic_ack(batch[-1].tag, multiple=True)
                    self._projection.after_batch(caught_up=len(batch) < self._batch_size)
                if time.monotonic() >= next_tick:
                    self._projection.tick()
                    next_tick = time.monotonic() + self._tick_interval
        finally:
            self.connected.clear()
            try:
                if connection.is_open:
                    connection.close()
            except AMQP_ERRORS:
                pass

    def _drain_ready(self, connection: pika.BlockingConnection) -> None:
        """Take what the broker has already sent, up to a batch: pika returns as soon as one
        message is ready, and a batch of one costs a commit per event while catching up."""
        while 0 < len(self._buffer) < self._batch_size:
            before = len(self._buffer)
            connection.process_data_events(time_limit=0)
            if len(self._buffer) == before:
                return

    def _on_message(
        self, _channel: Any, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        position = int((properties.headers or {})["x-stream-offset"])
        self._buffer.append(_Delivery(method.delivery_tag, position, body))

    def _apply(self, batch: list[_Delivery]) -> None:
        fresh = [d for d in batch if self._position is None or d.position > self._position]
        if not fresh:
            return
        try:
            applied = self._apply_in_one_transaction(fresh, isolate=False)
        except _BadEvent:
            # Rare: redo the batch with a savepoint per event, so only the bad one is set aside.
            applied = self._apply_in_one_transaction(fresh, isolate=True)
        self._position = fresh[-1].position
        if self._on_applied:
            self._on_applied(self._position)
        if self._on_committed:
            self._on_committed(applied)

    def _apply_in_one_transaction(self, fresh: list[_Delivery], isolate: bool) -> list[Event]:
        with Session(self._engine) as session, session.begin():
            if isolate:
                applied = self._apply_each_apart(session, fresh)
            else:
                try:
                    batch = [Logged(decode(d.body), d.position) for d in fresh]
                    self._projection.apply_batch(session, batch)
                except sa.exc.DBAPIError:
                    raise  # the database failed, not an event: retry the whole batch
                except BAD_EVENT as exc:
                    raise _BadEvent from exc
                applied = [logged.event for logged in batch]
            self._store_position(session, fresh[-1].position)
        return applied

    def _apply_each_apart(self, session: Session, fresh: list[_Delivery]) -> list[Event]:
        """Each event under its own savepoint, so that only a bad one is set aside."""
        applied: list[Event] = []
        for delivery in fresh:
            try:
                event = decode(delivery.body)
                with session.begin_nested():
                    self._projection.apply_batch(session, [Logged(event, delivery.position)])
                applied.append(event)
            except sa.exc.DBAPIError:
                raise
            except BAD_EVENT as exc:
                self._dead_letter(session, delivery, exc)
        return applied

    def _offset_moved(self) -> bool:
        """Another process projecting into the same tables (several API processes on one
        database) may commit the same rows first: a duplicate key is then the offset conflict
        seen early, and the batch is retried from the stored position."""
        return self._stored_position() != self._position

    def _dead_letter(self, session: Session, delivery: _Delivery, exc: Exception) -> None:
        self.dead_lettered += 1
        log.error(
            "%s: dead-lettered event at offset %d: %r",
            self._projection.consumer,
            delivery.position,
            exc,
        )
        session.execute(
            self._projection.dead_letters.insert().values(
                consumer=self._projection.consumer,
                position=delivery.position,
                error=repr(exc),
                body=delivery.body,
                recorded_at=utcnow(),
            )
        )

    def _stored_position(self) -> int | None:
        table = self._projection.offsets
        with self._engine.connect() as connection:
            return connection.execute(
                sa.select(table.c.position).where(table.c.consumer == self._projection.consumer)
            ).scalar_one_or_none()

    def _store_position(self, session: Session, position: int) -> None:
        """Compare-and-set: a second process applying the same consumer's events fails loudly."""
        table = self._projection.offsets
        consumer = self._projection.consumer
        if self._position is None:
            try:
                with session.begin_nested():
                    session.execute(table.insert().values(consumer=consumer, position=position))
            except sa.exc.IntegrityError:
                raise ConcurrencyError(f"{consumer}: offset written by another process") from None
            return
        result = session.execute(
            table.update()
            .where(table.c.consumer == consumer, table.c.position == self._position)
            .values(position=position)
        )
        if cast(sa.CursorResult[Any], result).rowcount != 1:
            raise ConcurrencyError(f"{consumer}: offset moved by another process")
