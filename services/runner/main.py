"""`freight serve runner`: one per host; runs the attempts the scheduler gives it."""

from __future__ import annotations

import logging

from services.runner.attempt import RunnerContext
from services.runner.executor import DockerExecutor
from services.runner.projection import RunnerProjection
from shared.bus import Publisher, Topology
from shared.config import Settings
from shared.consumer import StreamConsumer
from shared.db import create_engine, migrate
from shared.events import EventFactory, utcnow
from shared.runtime import stop_on_signals

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    executor = DockerExecutor.from_env(pool_size=settings.runner_slots * 2 + 4)
    engine = create_engine(settings.database_url_for("runner"))
    migrate(engine, "runner")
    topology = Topology.from_settings(settings)
    publisher = Publisher(
        settings.amqp_url, topology, f"runner:{settings.runner_id}", settings.publish_timeout
    )
    ctx = RunnerContext(
        runner_id=settings.runner_id,
        namespace=settings.namespace,
        executor=executor,
        log=publisher,
        new_event=EventFactory(f"runner:{settings.runner_id}"),
        network=settings.job_network,
        workdir=settings.job_workdir,
        stop_grace=settings.stop_grace,
    )
    projection = RunnerProjection(
        engine,
        ctx,
        slots=settings.runner_slots,
        heartbeat_interval=settings.heartbeat_interval,
        clock=utcnow,
    )
    log.info("runner %s: %d slots", settings.runner_id, settings.runner_slots)
    consumer = StreamConsumer(settings.amqp_url, topology, engine, projection)
    try:
        # Containers outlive this process on purpose: a restarted runner re-adopts them.
        consumer.run(stop_on_signals())
    finally:
        publisher.close()
