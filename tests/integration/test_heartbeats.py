"""Heartbeats on their own stream: bounded by age, heard live, never replayed."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest

from freight_server.shared.bus import Topology
from freight_server.shared.config import Settings
from freight_server.shared.events import EventFactory, EventType
from freight_server.shared.heartbeats import HeartbeatListener
from tests.proxy import CuttableProxy
from tests.waiting import wait_until

runner = EventFactory("runner")


def heartbeat(runner_id: str, slots: int):
    return runner(EventType.RUNNER_HEARTBEAT, None, runner=runner_id, slots=slots, gpus=[])


@pytest.fixture
def listener(settings: Settings, topology: Topology) -> Iterator[HeartbeatListener]:
    listener = HeartbeatListener(settings.amqp_url, topology, "test")
    yield listener
    listener.close()


def test_the_heartbeats_stream_is_bounded_by_age_and_apart_from_the_log(settings, publisher):
    publisher.send_heartbeat(heartbeat("a", 2))
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        stream = f"{settings.namespace}.heartbeats"
        assert channel.queue_declare(stream, passive=True).method.message_count >= 0
        # Declaring it without its bound is refused: the bound is what it was made with.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
        assert refused.value.reply_code == 406 and "x-max-age" in refused.value.reply_text
        channel = connection.channel()
        events = channel.queue_declare(settings.events_stream, passive=True)
        assert events.method.message_count == 0  # nothing of it in the events stream
    finally:
        connection.close()


def test_a_listener_hears_each_runner_latest_heartbeat_live_never_old_ones(publisher, listener):
    publisher.send_heartbeat(heartbeat("before", 1))  # said before anyone listened
    assert listener.take() == []  # starts listening

    def heard() -> dict[str, int] | None:
        publisher.send_heartbeat(heartbeat("a", 1))
        publisher.send_heartbeat(heartbeat("a", 2))
        publisher.send_heartbeat(heartbeat("b", 4))
        latest = {e.data["runner"]: e.data["slots"] for e in listener.take()}
        return latest if {"a", "b"} <= set(latest) else None

    latest = wait_until(heard, timeout=10, what="both runners heard")
    assert latest.get("before") is None
    assert latest["b"] == 4 and latest["a"] in (1, 2)  # the latest of a round, at most one each


def test_a_listener_says_since_when_it_can_hear_and_when_it_cannot(settings, topology):
    """What lets the scheduler judge no runner while the broker is away (scheduler/liveness.py):
    no subscription, no time to count silence from; a new one, a new time."""
    real = urlsplit(settings.amqp_url)
    proxy = CuttableProxy(real.hostname or "127.0.0.1", real.port or 5672)
    netloc = f"{real.username}:{real.password}@127.0.0.1:{proxy.port}"
    through = urlunsplit(real._replace(netloc=netloc))
    listener = HeartbeatListener(through, topology, "test")
    try:
        assert listener.listening_since() is None  # not listening before its first take
        listener.take()
        first = wait_until(listener.listening_since, timeout=10, what="a subscription")
        proxy.cut()
        wait_until(lambda: listener.listening_since() is None, timeout=10, what="deaf")
        proxy.restore()
        again = wait_until(listener.listening_since, timeout=20, what="a new subscription")
        assert again > first
    finally:
        listener.close()
        proxy.close()
