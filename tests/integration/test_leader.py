"""A leader whose work dies gives its lock up, against the real RabbitMQ: a standby takes over
instead of waiting for ever behind a process that holds the lock but no longer projects."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from freight_server.services.api.projection import ApiProjection
from freight_server.services.api.projector import project_while_leading
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import LogBehindProjection, StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.leader import LeaderLock, lead_while_holding
from tests.waiting import wait_until


class DiesOnTick(ApiProjection):
    """The API's projection with a bug that surfaces between batches."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ticked = threading.Event()  # it ran, so its process held the lock

    def tick(self) -> None:
        self.ticked.set()
        raise RuntimeError("a bug in tick")


@pytest.fixture
def topology(settings: Settings) -> Topology:
    return Topology.from_settings(settings)


@pytest.fixture
def lock(settings: Settings, topology: Topology) -> LeaderLock:
    return LeaderLock(settings.amqp_url, topology, "api-projection-test", retry_interval=0.2)


@contextmanager
def running(target: Callable[[threading.Event], None]) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


@contextmanager
def rival_of(lock: LeaderLock) -> Iterator[threading.Event]:
    """Another process contending for the same lock; yields its `lead`."""
    lead, lost = threading.Event(), threading.Event()
    with running(lambda stop: lock.hold(stop, lead, lost)):
        yield lead


def test_a_projection_that_dies_releases_the_lock(settings, topology, lock, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'api.db'}")
    migrate(engine, "api")
    publisher = Publisher(settings.amqp_url, topology, "test")
    projection = DiesOnTick(engine, publisher, settings.response_exchange)
    consumer = StreamConsumer(settings.amqp_url, topology, engine, projection, tick_interval=0.1)
    try:
        with running(lambda stop: project_while_leading(lock, consumer, stop, backoff=60.0)):
            wait_until(projection.ticked.is_set, what="the first process projecting")
            with rival_of(lock) as rival_leads:
                wait_until(rival_leads.is_set, what="the standby to take the lock over")
    finally:
        publisher.close()
        engine.dispose()


def test_a_fatal_error_is_raised_and_the_lock_released(lock):
    def refuse(_until: threading.Event) -> None:
        raise LogBehindProjection("the stream was recreated")

    with pytest.raises(LogBehindProjection):
        lead_while_holding(lock, threading.Event(), refuse, fatal=(LogBehindProjection,))
    with rival_of(lock) as rival_leads:
        wait_until(rival_leads.is_set, what="the lock free again")
