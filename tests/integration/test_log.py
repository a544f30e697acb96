"""The log against the real RabbitMQ: confirmed appends, a consumer that applies each event
exactly once across restarts, redeliveries and poison messages, on SQLite and PostgreSQL."""

from __future__ import annotations

from contextlib import AbstractContextManager as ContextManager

import pika
import pytest
import sqlalchemy as sa

from freight_server.services.api import schema
from freight_server.services.api.projection import ApiProjection
from freight_server.shared.bus import BrokerUnavailable, Publisher
from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.events import EventFactory, EventType
from tests.integration.consuming import consuming
from tests.waiting import wait_until

new_event = EventFactory("test")


def submitted(n: int):
    return new_event(EventType.JOB_SUBMITTED, f"job-{n:04d}", command=f"echo {n}", image="busybox")


@pytest.fixture
def engine(api_engine: sa.Engine) -> sa.Engine:
    return api_engine


def consuming_api(settings, topology, engine, publisher) -> ContextManager[StreamConsumer]:
    projection = ApiProjection(engine, publisher, settings.response_exchange)
    return consuming(settings, topology, engine, projection, tick_interval=1.0)


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def stored_offset(engine: sa.Engine) -> int | None:
    with engine.connect() as connection:
        return connection.execute(sa.select(schema.offsets.c.position)).scalar_one_or_none()


def test_each_event_is_applied_once_across_restarts(settings, topology, engine, publisher):
    publisher.append(*[submitted(n) for n in range(120)])
    with consuming_api(settings, topology, engine, publisher):
        wait_until(lambda: count(engine, schema.jobs) == 120, what="120 jobs projected")
    first_offset = stored_offset(engine)
    assert first_offset is not None

    # While the consumer is down: new events, and one event published twice.
    again = submitted(120)
    publisher.append(again, again, *[submitted(n) for n in range(121, 130)])
    with consuming_api(settings, topology, engine, publisher):
        wait_until(lambda: count(engine, schema.jobs) == 130, what="130 jobs projected")
        wait_until(lambda: stored_offset(engine) == first_offset + 11, what="offset stored")
    assert count(engine, schema.events) == 130


def test_a_log_longer_than_the_prefetch_flows_between_ticks(settings, topology, engine, publisher):
    # The consumer returns the broker its credit once half its prefetch is applied: with no
    # tick to do it, 300 events still flow through a prefetch of 20.
    publisher.append(*[submitted(n) for n in range(300)])
    projection = ApiProjection(engine, publisher, settings.response_exchange)
    with consuming(settings, topology, engine, projection, batch_size=20, tick_interval=3600):
        wait_until(lambda: count(engine, schema.jobs) == 300, what="300 jobs projected")


def test_poison_message_is_dead_lettered_and_the_consumer_goes_on(
    settings, topology, engine, publisher
):
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    topology.declare(channel)
    channel.basic_publish("", topology.events_stream, b"\xff not an event")
    connection.close()
    publisher.append(submitted(1))
    with consuming_api(settings, topology, engine, publisher) as consumer:
        wait_until(lambda: count(engine, schema.jobs) == 1, what="the good event projected")
        assert consumer.dead_lettered == 1
    with engine.connect() as db:
        letter = db.execute(sa.select(schema.dead_letters)).one()
    assert letter.body == b"\xff not an event" and "not JSON" in letter.error


def test_ended_job_is_announced_on_job_response(settings, topology, engine, publisher):
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    topology.declare(channel)
    mine = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(mine, topology.response_exchange, routing_key="job-0001")

    publisher.append(
        submitted(1), submitted(2), new_event(EventType.JOB_CANCEL_REQUESTED, "job-0001")
    )
    with consuming_api(settings, topology, engine, publisher):
        body = wait_until(lambda: channel.basic_get(mine, auto_ack=True)[2], what="job_response")
    assert b'"job_id": "job-0001"' in body and b'"status": "FAILED"' in body
    # The shared queue got it too, and nothing for the job that has not ended.
    _, props, shared_body = channel.basic_get(topology.response_queue, auto_ack=True)
    assert shared_body == body and props.correlation_id == "job-0001"
    assert channel.basic_get(topology.response_queue, auto_ack=True)[0] is None
    connection.close()


def test_publisher_reports_an_unreachable_broker(topology):
    publisher = Publisher("amqp://guest:guest@127.0.0.1:1/", topology, "test", timeout=5)
    try:
        with pytest.raises(BrokerUnavailable):
            publisher.append(submitted(1))
    finally:
        publisher.close()
