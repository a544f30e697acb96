"""`job_response` on the real RabbitMQ: bounded (the oldest messages go first), an older queue
without the bound kept as it is, and a queue an operator deleted declared again."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pika
import pytest
import sqlalchemy as sa

from freight_server.services.api import schema
from freight_server.services.api.projection import ApiProjection
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, EventType
from tests.waiting import wait_until


@pytest.fixture
def channel(settings: Settings) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    yield connection.channel()
    if connection.is_open:
        connection.close()


def respond(channel, exchange: str, n: int) -> None:
    channel.basic_publish(exchange, f"job-{n}", json.dumps({"n": n}).encode())


def drain(channel, queue: str) -> list[int]:
    got = []
    while (message := channel.basic_get(queue, auto_ack=True))[0] is not None:
        got.append(json.loads(message[2])["n"])
    return got


def test_the_queue_keeps_the_newest_up_to_its_bound(settings, channel):
    topology = Topology.from_settings(replace(settings, response_queue_max_length=3))
    topology.declare(channel)
    channel.confirm_delivery()
    for n in range(5):
        respond(channel, topology.response_exchange, n)
    assert drain(channel, topology.response_queue) == [2, 3, 4]
    # Declaring it again with the same bound is accepted: every service does at each start.
    topology.declare(channel)
    assert channel.is_open


def test_the_bound_and_ttl_are_the_queues_arguments(settings, channel):
    topology = Topology.from_settings(
        replace(settings, response_queue_max_length=7, response_queue_ttl=60)
    )
    topology.declare(channel)
    # A passive declaration with other arguments would be refused; this one names the same.
    assert topology.response_queue_bound() == {
        "x-max-length": 7,
        "x-overflow": "drop-head",
        "x-message-ttl": 60_000,
    }
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare(topology.response_queue, durable=True)  # without the bound
    assert refused.value.reply_code == 406


def test_a_queue_from_before_the_bound_is_kept_with_a_warning(settings, channel, caplog):
    channel.queue_declare(settings.response_queue, durable=True)  # as older Freights made it
    topology = Topology.from_settings(settings)
    with caplog.at_level(logging.WARNING, logger="freight_server.shared.bus"):
        topology.declare(channel)
        topology.declare(channel)
    assert channel.is_open  # the caller's channel goes on
    warnings = [
        r.getMessage() for r in caplog.records if "rabbitmqctl set_policy" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings  # once a process
    assert settings.response_queue in warnings[0] and '"overflow": "drop-head"' in warnings[0]

    # The publisher starts on it all the same, and responses still reach the queue.
    publisher = Publisher(settings.amqp_url, topology, "test", timeout=5)
    try:
        publisher.append(EventFactory("test")(EventType.SCHEDULER_STARTED))
        projection = ApiProjection(
            engine_with_outbox(settings), publisher, topology.response_exchange
        )
        projection.announce_finished_jobs()
        assert drain_bodies(channel, settings.response_queue) == ["job-1"]
    finally:
        publisher.close()


def test_a_deleted_queue_is_declared_again_and_gets_the_response(settings, channel):
    topology = Topology.from_settings(settings)
    publisher = Publisher(settings.amqp_url, topology, "test", timeout=5)
    try:
        publisher.append(EventFactory("test")(EventType.SCHEDULER_STARTED))  # topology declared
        channel.queue_delete(settings.response_queue)  # an operator's cleanup
        engine = engine_with_outbox(settings)
        ApiProjection(engine, publisher, topology.response_exchange).announce_finished_jobs()
        assert drain_bodies(channel, settings.response_queue) == ["job-1"]
        with engine.connect() as connection:
            assert connection.execute(sa.select(schema.outbox)).all() == []
    finally:
        publisher.close()


def engine_with_outbox(settings: Settings) -> sa.Engine:
    """The API's tables with one ended job waiting in the outbox."""
    engine = create_engine(f"sqlite:///{Path(settings.home) / 'api.db'}")
    Path(settings.home).mkdir(parents=True, exist_ok=True)
    migrate(engine, "api")
    with engine.begin() as connection:
        connection.execute(
            schema.outbox.insert().values(
                job_id="job-1", body={"job_id": "job-1", "status": "COMPLETE"}
            )
        )
    return engine


def drain_bodies(channel, queue: str) -> list[str]:
    def arrived():
        return channel.basic_get(queue, auto_ack=True)

    _, _, body = wait_until(lambda: (m := arrived())[0] is not None and m, what="a response")
    got = [json.loads(body)["job_id"]]
    while (message := arrived())[0] is not None:
        got.append(json.loads(message[2])["job_id"])
    return got
