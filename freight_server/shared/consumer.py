"""Consume the event log into a projection, exactly once per event.

A consumer reads the stream from its stored position, applies each batch of events to its
database and stores the new position in the same transaction; its acks only return the broker
its credit (`_acknowledge`). A crash anywhere
replays from the stored position; positions at or below it are skipped, so nothing is applied
twice or skipped.

An event that cannot be decoded or applied, for whatever reason, is dead-lettered with its error
and the projection goes on: one bad event must never halt a service. Only a fault of the
database itself (connection lost, lock timeout, another process moving the offset) is retried,
since it says nothing about the event. Between batches the consumer replays the dead letters an
operator asked for (`freight dead-letters replay`) and prunes the old ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, cast

import pika
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.shared.bus import AMQP_ERRORS, Topology, connect
from freight_server.shared.config import Settings
from freight_server.shared.db import ConcurrencyError
from freight_server.shared.dead_letters import (
    prune_dead_letters,
    record_failed_replay,
    requested_replays,
)
from freight_server.shared.events import Event, Logged, decode, utcnow
from freight_server.shared.metrics import BrokerUnreachable, StreamTail
from freight_server.shared.snapshots import (
    LogTruncated,
    LogUnusable,
    first_offset,
    newest_snapshot,
    snapshot_events,
)

log = logging.getLogger(__name__)


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


# Faults of the database, whatever the event: the batch is retried as it is. Anything else
# raised while applying an event (a DataError from a too-long id, an IntegrityError, a
# TypeError from an odd shape, an outcome from a newer version) is that event's fault.
DATABASE_FAULTS = (
    sa.exc.OperationalError,  # connection lost, lock or statement timeout, deadlock
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,  # no connection free in the pool
    ConcurrencyError,
)

# session.info: the stretch of consuming a transaction belongs to, from one start at the stored
# position to the next (a reconnect, a conflict with another process): memory of what earlier
# transactions committed holds only within it (shared/views.py ViewCache).
CONSUMING = "log.consuming"

# How often old dead letters are pruned: they are few, and a day's delay changes nothing.
PRUNE_INTERVAL = 60.0


class LogBehindProjection(LogUnusable):
    """The database has applied events past the stream's end: the stream was deleted and
    recreated, or lost a tail never flushed to disk. Consuming would skip events silently."""


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
        dead_letter_retention: float | None = Settings.file_retention,
        tail: StreamTail | None = None,
    ):
        self._url = amqp_url
        self._topology = topology
        self._engine = engine
        self._projection = projection
        self._batch_size = batch_size
        self._tick_interval = tick_interval
        self._on_applied = on_applied
        self._on_committed = on_committed  # metrics: sees each committed event once
        # Services pass FREIGHT_FILE_RETENTION; None keeps dead letters until replayed.
        self._retention = (
            None if dead_letter_retention is None else timedelta(seconds=dead_letter_retention)
        )
        self._tail = tail or start_check_tail(amqp_url, topology)
        offsets = projection.offsets  # built once: its every batch's last statement
        self._move_position = (
            offsets.update()
            .where(
                offsets.c.consumer == sa.bindparam("name"),
                offsets.c.position == sa.bindparam("was"),
            )
            .values(position=sa.bindparam("now"))
        )
        self._position: int | None = None
        self._stretch = object()  # CONSUMING: a new one each time the position is read
        self._caught_up = False
        self._next_prune = 0.0
        self._buffer: list[_Delivery] = []
        self._applied_tag: int | None = None  # the last delivery applied and not yet acked
        self._unacked = 0
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
            except (*AMQP_ERRORS, *DATABASE_FAULTS, BrokerUnreachable) as exc:
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
        self._applied_tag, self._unacked = None, 0  # delivery tags are the channel's own
        self._position = self._stored_position()
        self._stretch = object()
        if self._position is None and self._projection.start_at == "first":
            self._position = self._start_from_snapshot()
        start: Any = self._projection.start_at if self._position is None else self._position + 1
        connection = connect(
            self._url, self._topology.connection_name(f"{self._projection.consumer}-consumer")
        )
        try:
            channel = connection.channel()
            self._topology.declare(channel)
            self._refuse_a_log_behind()
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
                    self._apply(batch)
                    self._acknowledge(channel, batch)
                    self._caught_up = len(batch) < self._batch_size
                    self._projection.after_batch(caught_up=self._caught_up)
                if time.monotonic() >= next_tick:
                    self._acknowledge(channel, [])
                    self._replay_requested_dead_letters()
                    self._prune_dead_letters()
                    self._projection.tick()
                    next_tick = time.monotonic() + self._tick_interval
        finally:
            self.connected.clear()
            try:
                if connection.is_open:
                    connection.close()
            except AMQP_ERRORS:
                pass

    def _acknowledge(self, channel: Any, applied: list[_Delivery]) -> None:
        """Return the broker its credit for what was applied, once half the prefetch is spent
        (and at each tick): on a stream an ack only lets more through, since the position that
        says what was applied is the database's. Each ack is a flush of pika's blocking
        connection, which cost a tenth of a service's CPU when every small batch sent one."""
        if applied:
            self._applied_tag = applied[-1].tag
            self._unacked += len(applied)
            if self._unacked < max(1, self._batch_size // 2):
                return
        if self._applied_tag is not None and self._unacked:
            channel.basic_ack(self._applied_tag, multiple=True)
            self._unacked = 0

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
            session.info[CONSUMING] = self._stretch
            if isolate:
                applied = self._apply_each_apart(session, fresh)
            else:
                try:
                    batch = [Logged(decode(d.body), d.position) for d in fresh]
                    self._projection.apply_batch(session, batch)
                except Exception as exc:
                    self._reraise_database_faults(exc)
                    raise _BadEvent from exc
                applied = [logged.event for logged in batch]
            self._store_position(session, fresh[-1].position)
        return applied

    def _apply_each_apart(self, session: Session, fresh: list[_Delivery]) -> list[Event]:
        """Each event under its own savepoint: on PostgreSQL a failed statement aborts the
        whole transaction, and rolling back to the savepoint is what lets the batch go on."""
        _begin_before_savepoints(session)
        applied: list[Event] = []
        for delivery in fresh:
            try:
                with session.begin_nested():
                    event = decode(delivery.body)
                    self._projection.apply_batch(session, [Logged(event, delivery.position)])
            except Exception as exc:
                self._reraise_database_faults(exc)
                self._dead_letter(session, delivery, exc)
            else:
                applied.append(event)
        return applied

    def _reraise_database_faults(self, exc: Exception) -> None:
        """Raise again what the database is to blame for; return if the events are."""
        if isinstance(exc, DATABASE_FAULTS):
            raise exc
        if isinstance(exc, sa.exc.IntegrityError) and self._offset_moved():
            raise ConcurrencyError(
                f"{self._projection.consumer}: another process applied these first"
            ) from exc

    def _offset_moved(self) -> bool:
        """Another process projecting into the same tables (several API processes on one
        database) may commit the same rows first: a duplicate key is then the offset conflict
        seen early, and the batch is retried from the stored position."""
        return self._stored_position() != self._position

    def _start_from_snapshot(self) -> int | None:
        """A new projection of a stream that no longer starts at offset 0 folds the newest
        snapshot that reaches the stream's start, in one transaction with the snapshot's
        position as its offset; returns that position (None: the stream is whole)."""
        consumer = self._projection.consumer
        first = first_offset(self._url, self._topology, consumer)
        if not first:
            return None
        # Without a retention of its own (FREIGHT_LOG_RETENTION), no snapshot was ever taken.
        bounded = bool(self._topology.log_bounds())
        ref = newest_snapshot(self._url, self._topology, first, consumer) if bounded else None
        if ref is None:
            raise LogTruncated(
                f"{consumer}: the stream {self._topology.events_stream} now starts at offset "
                f"{first} (its retention dropped the rest), and no snapshot in "
                f"{self._topology.snapshots_stream} reaches it, so this new projection cannot "
                "be built. Start it from a copy of another instance's database, or keep the "
                "API running (it takes the snapshots) with FREIGHT_LOG_RETENTION set as the "
                "stream's and FREIGHT_SNAPSHOT_INTERVAL well below it."
            )
        log.info("%s: starting from snapshot at offset %d", consumer, ref.position)
        with Session(self._engine) as session, session.begin():
            for part in snapshot_events(self._url, self._topology, ref, consumer):
                self._projection.apply_batch(session, part)
            self._store_position(session, ref.position)
        return ref.position

    def _refuse_a_log_behind(self) -> None:
        refuse_a_log_behind(
            self._projection.consumer,
            self._position,
            self._tail,
            self._topology.events_stream,
        )

    def _replay_requested_dead_letters(self) -> None:
        """Retry the dead letters an operator asked for, each in its own transaction; the
        fold tolerates an event arriving late."""
        table = self._projection.dead_letters
        with self._engine.connect() as connection:
            letters = requested_replays(connection, table, self._projection.consumer)
        replayed = [event for letter in letters if (event := self._replay(letter))]
        if replayed:
            if self._on_committed:
                self._on_committed(replayed)
            self._projection.after_batch(caught_up=self._caught_up)

    def _replay(self, letter: sa.Row[Any]) -> Event | None:
        table = self._projection.dead_letters
        consumer = self._projection.consumer
        try:
            with Session(self._engine) as session, session.begin():
                event = decode(letter.body)
                self._projection.apply_batch(session, [Logged(event, letter.position)])
                session.execute(table.delete().where(table.c.id == letter.id))
        except Exception as exc:
            self._reraise_database_faults(exc)
            log.error("%s: replay of dead letter %d failed again: %r", consumer, letter.id, exc)
            with self._engine.begin() as connection:
                record_failed_replay(connection, table, letter.id, repr(exc), utcnow())
            return None
        log.info("%s: replayed dead letter %d (offset %d)", consumer, letter.id, letter.position)
        return event

    def _prune_dead_letters(self) -> None:
        if self._retention is None or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        with self._engine.begin() as connection:
            pruned = prune_dead_letters(
                connection,
                self._projection.dead_letters,
                self._projection.consumer,
                recorded_before=utcnow() - self._retention,
            )
        if pruned:
            log.info("%s: pruned %d old dead letters", self._projection.consumer, pruned)

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
        return stored_position(self._engine, self._projection.offsets, self._projection.consumer)

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
            self._move_position, {"name": consumer, "was": self._position, "now": position}
        )
        if cast(sa.CursorResult[Any], result).rowcount != 1:
            raise ConcurrencyError(f"{consumer}: offset moved by another process")


def stored_position(engine: sa.Engine, offsets: sa.Table, consumer: str) -> int | None:
    with engine.connect() as connection:
        return connection.execute(
            sa.select(offsets.c.position).where(offsets.c.consumer == consumer)
        ).scalar_one_or_none()


def refuse_a_log_behind(consumer: str, position: int | None, tail: StreamTail, stream: str) -> None:
    """Stop before consuming from a position the stream has never reached: it would deliver
    nothing until it grew past it, and every event before that would be skipped."""
    if position is None:
        return
    read = tail.offset()
    last = -1 if read is None else read
    if position > last:
        raise LogBehindProjection(
            f"{consumer}: its database has applied the log up to offset {position}, but the "
            f"stream {stream} ends at offset {last}: the stream was deleted and recreated, or "
            "lost events never flushed to disk. Consuming would silently skip events. Either "
            "restore the stream, or reset this service's database (drop its tables, then "
            "`freight migrate`) so that it rebuilds from the stream."
        )


def start_check_tail(amqp_url: str, topology: Topology) -> StreamTail:
    """The tail as read once at start: a non-empty stream answers at once, so the longer wait
    is spent only where the stream looks empty, which is what the check must be sure of."""
    return StreamTail(amqp_url, topology, cache_for=0.0, first_wait=3.0)


def _begin_before_savepoints(session: Session) -> None:
    """pysqlite opens a transaction only before a write: a savepoint issued first would be a
    transaction of its own, committed by its release apart from the batch's offset."""
    if session.get_bind().dialect.name != "sqlite":
        return
    connection = session.connection()
    if not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN")
