"""A log with a retention: a service that joins after the stream was truncated starts from the
API's snapshot and knows every job it still needs; without a snapshot it refuses to start."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pika
import pytest
import sqlalchemy as sa

from freight_server.services.api import schema as api_schema
from freight_server.services.api.projection import ApiProjection
from freight_server.services.api.snapshots import SnapshotTaker
from freight_server.services.scheduler import schema as scheduler_schema
from freight_server.services.scheduler.projection import SchedulerProjection
from freight_server.shared.config import Settings
from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventFactory, EventType, utcnow
from freight_server.shared.snapshots import LogTruncated, first_offset
from tests.integration.consuming import consuming, run_until_raises
from tests.waiting import wait_until

DAY = timedelta(days=1)
api = EventFactory("api")
long_ago = EventFactory("api", clock=lambda: utcnow() - 30 * DAY)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A stream that keeps ~24 KiB in 4 KiB segments: a few hundred events truncate it.
    return replace(settings, log_max_bytes=24 * 1024, log_segment_bytes=4096)


class Recorder:
    def append(self, *events: Event) -> None:
        pass


def submitted(job_id: str, factory: EventFactory = api) -> Event:
    return factory(EventType.JOB_SUBMITTED, job_id, command="true", image="busybox")


def cancelled(job_id: str, factory: EventFactory = api) -> Event:
    return factory(EventType.JOB_CANCEL_REQUESTED, job_id)


def filler(start: int, count: int) -> list[Event]:
    return [
        e for n in range(start, start + count) for e in (submitted(f"f{n}"), cancelled(f"f{n}"))
    ]


def position_of(engine: sa.Engine, job_id: str) -> int | None:
    """Where the API read the job's last event."""
    events = api_schema.events
    with engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.max(events.c.position)).where(events.c.job_id == job_id)
        ).scalar_one_or_none()


def scheduler_jobs(engine: sa.Engine) -> dict[str, str]:
    jobs = scheduler_schema.jobs
    with engine.connect() as connection:
        return dict(connection.execute(sa.select(jobs.c.job_id, jobs.c.status)).all())


@pytest.fixture
def engines(tmp_path) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    api_engine = create_engine(f"sqlite:///{tmp_path / 'api.db'}")
    scheduler_engine = create_engine(f"sqlite:///{tmp_path / 'scheduler.db'}")
    migrate(api_engine, "api")
    migrate(scheduler_engine, "scheduler")
    yield api_engine, scheduler_engine
    api_engine.dispose()
    scheduler_engine.dispose()


def new_scheduler(engine: sa.Engine) -> SchedulerProjection:
    return SchedulerProjection(engine, Recorder(), EventFactory("scheduler"), 30.0, utcnow)


def test_a_service_joining_a_truncated_log_starts_from_the_snapshot(
    settings, topology, publisher, engines
):
    api_engine, scheduler_engine = engines
    history = [
        submitted("ended-long-ago", long_ago),
        cancelled("ended-long-ago", long_ago),
        submitted("queued-1"),
        submitted("ended-yesterday"),
        cancelled("ended-yesterday"),
        submitted("queued-2"),
    ]
    publisher.append(*history, *filler(0, 20))
    projection = ApiProjection(api_engine, publisher, settings.response_exchange)
    with consuming(settings, topology, api_engine, projection):
        wait_until(lambda: position_of(api_engine, "f19"), what="the API to apply the history")
    taker = SnapshotTaker(api_engine, publisher, topology, 3600, timedelta(days=7), clock=utcnow)
    at = taker.take()
    assert at is not None and at == position_of(api_engine, "f19")
    history_end = position_of(api_engine, "queued-2") or 0

    # The log goes on until its retention cut away the history (but not the snapshot's end).
    def truncated() -> int | None:
        publisher.append(*filler(1000, 10))
        first = first_offset(settings.amqp_url, topology, "test")
        return first if first and first > history_end else None

    first = wait_until(truncated, timeout=60, what="the stream to lose its oldest events")
    assert first <= at + 1, "the test's retention cut past the snapshot"

    with consuming(settings, topology, scheduler_engine, new_scheduler(scheduler_engine)):
        wait_until(lambda: "f1000" in scheduler_jobs(scheduler_engine), what="the rest of the log")
    jobs = scheduler_jobs(scheduler_engine)
    assert jobs["queued-1"] == jobs["queued-2"] == "QUEUED"  # from before the cut
    assert jobs["ended-yesterday"] == "FAILED"  # ended, but within the files' retention
    assert "ended-long-ago" not in jobs  # over for good: not in the snapshot


def test_a_service_joining_a_truncated_log_without_a_snapshot_refuses(
    settings, topology, publisher, engines
):
    _, scheduler_engine = engines

    def truncated() -> bool:
        publisher.append(*filler(0, 20))
        return bool(first_offset(settings.amqp_url, topology, "test"))

    wait_until(truncated, timeout=60, what="the stream to lose its oldest events")
    consumer = StreamConsumer(
        settings.amqp_url, topology, scheduler_engine, new_scheduler(scheduler_engine)
    )
    error = run_until_raises(consumer)
    assert isinstance(error, LogTruncated)
    assert "no snapshot" in str(error) and topology.snapshots_stream in str(error)


def test_the_events_stream_is_made_with_its_retention(settings, topology):
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        topology.declare(connection.channel())
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            connection.channel().queue_declare(
                settings.events_stream, durable=True, arguments={"x-queue-type": "stream"}
            )
        assert refused.value.reply_code == 406 and "x-max-length-bytes" in str(refused.value)
    finally:
        connection.close()


def test_a_stream_made_before_its_retention_is_kept_and_the_operator_told(
    settings, topology, caplog
):
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(
            settings.events_stream, durable=True, arguments={"x-queue-type": "stream"}
        )
        topology.declare(channel)
        assert channel.is_open
    finally:
        connection.close()
    assert "rabbitmqctl set_policy" in caplog.text and settings.events_stream in caplog.text
    assert '"max-length-bytes": 24576' in caplog.text
