"""`freight serve scheduler`: one active scheduler over the log."""

from __future__ import annotations

from services.scheduler.projection import SchedulerProjection
from shared.bus import Publisher, Topology
from shared.config import Settings
from shared.consumer import StreamConsumer
from shared.db import create_engine, migrate
from shared.events import EventFactory, utcnow
from shared.runtime import stop_on_signals


def serve(settings: Settings) -> None:
    engine = create_engine(settings.database_url_for("scheduler"))
    migrate(engine, "scheduler")
    topology = Topology.from_settings(settings)
    publisher = Publisher(settings.amqp_url, topology, "scheduler", settings.publish_timeout)
    projection = SchedulerProjection(
        engine,
        publisher,
        EventFactory("scheduler"),
        runner_deadline=settings.runner_deadline,
        clock=utcnow,
    )
    consumer = StreamConsumer(settings.amqp_url, topology, engine, projection)
    try:
        consumer.run(stop_on_signals())
    finally:
        publisher.close()
