"""Running a projection's consumer on a thread, as the services do, for a test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from freight_server.shared.bus import Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import Projection, StreamConsumer
from tests.waiting import wait_until


@contextmanager
def consuming(
    settings: Settings,
    topology: Topology,
    engine: sa.Engine,
    projection: Projection,
    **options: Any,
) -> Iterator[StreamConsumer]:
    options = {"batch_size": 50, "tick_interval": 0.1, **options}
    consumer = StreamConsumer(settings.amqp_url, topology, engine, projection, **options)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def run_until_raises(consumer: StreamConsumer) -> BaseException:
    raised: list[BaseException] = []
    stop = threading.Event()

    def run() -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: not thread.is_alive(), what="the consumer to refuse")
    finally:
        stop.set()
        thread.join(timeout=10)
    return raised[0]
