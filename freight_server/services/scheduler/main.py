"""`freight serve scheduler`: one active scheduler over the log; any others stand by.

A standby takes over within seconds of the active one dying (the leader lock is RabbitMQ's
exclusive queue). A new leader replays the log before it places anything, so a takeover never
places a job twice.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from freight_server.services.scheduler.projection import SchedulerProjection
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, utcnow
from freight_server.shared.heartbeats import HeartbeatListener
from freight_server.shared.leader import LeaderLock, lead_while_holding
from freight_server.shared.metrics import export_projection, serve_metrics_from_env
from freight_server.shared.runtime import stop_on_signals
from freight_server.shared.snapshots import LogUnusable

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    stop = stop_on_signals()
    serve_metrics_from_env()  # a standby answers scrapes too
    topology = Topology.from_settings(settings)
    lock = LeaderLock(settings.amqp_url, topology, "scheduler")
    # A log behind the database, or cut short with no snapshot, is no passing fault: retrying
    # would only skip events later.
    lead_while_holding(
        lock,
        stop,
        lambda until: schedule(settings, topology, until),
        fatal=(LogUnusable,),
    )


def schedule(settings: Settings, topology: Topology, until: threading.Event) -> None:
    engine = create_engine(settings.database_url_for("scheduler"))
    migrate(engine, "scheduler")
    publisher = Publisher(settings.amqp_url, topology, "scheduler", settings.publish_timeout)
    heartbeats = HeartbeatListener(settings.amqp_url, topology, "scheduler")
    projection = SchedulerProjection(
        engine,
        publisher,
        EventFactory("scheduler"),
        runner_deadline=settings.runner_deadline,
        clock=utcnow,
        heartbeats=heartbeats,
        retention=timedelta(seconds=settings.file_retention),
    )
    on_committed, unwatch = export_projection(settings.amqp_url, topology, engine, projection)
    consumer = StreamConsumer(
        settings.amqp_url,
        topology,
        engine,
        projection,
        on_committed=on_committed,
        dead_letter_retention=settings.file_retention,
    )
    try:
        consumer.run(until)
    finally:
        unwatch()
        heartbeats.close()
        publisher.close()
        engine.dispose()
