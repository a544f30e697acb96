"""`freight serve api`: gunicorn serving the falcon app, each worker with its projection."""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

import falcon
import sqlalchemy as sa
from gunicorn.app.base import BaseApplication

from freight_server.services.api.admission import Admission, AdmissionCollector
from freight_server.services.api.app import create_app
from freight_server.services.api.auth import check_exposure
from freight_server.services.api.health import ApiMetrics, Monitor, max_lag_from_env
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.projection import ApiProjection
from freight_server.services.api.projector import project_while_leading, projector_role
from freight_server.services.api.quotas import QuotaAnnouncer
from freight_server.services.api.runners import RunnerBoard, RunnerStore
from freight_server.services.api.saved_files import OutputStore
from freight_server.services.api.snapshots import SnapshotTaker
from freight_server.services.api.store import JobStore, RecentSubmissions
from freight_server.shared.bus import Publisher, Topology, connect
from freight_server.shared.config import Settings
from freight_server.shared.consumer import (
    StreamConsumer,
    refuse_a_log_behind,
    start_check_tail,
    stored_position,
)
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, utcnow
from freight_server.shared.filestore_client import FilestoreClient, RunnerFilesClient
from freight_server.shared.heartbeats import HeartbeatListener
from freight_server.shared.leader import LeaderLock
from freight_server.shared.metrics import ProjectionCollector, StreamTail
from freight_server.shared.rpc import Node, NodeConfig
from freight_server.shared.secret_env import SecretBox

log = logging.getLogger(__name__)


def build(settings: Settings, stop: threading.Event) -> falcon.App:
    """The app with its projection running in a background thread until `stop` is set."""
    engine = create_engine(settings.database_url_for("api"))
    topology = Topology.from_settings(settings)
    publisher = Publisher(settings.amqp_url, topology, "api", settings.publish_timeout)
    projection = RunnerBoard(
        ApiProjection(
            engine,
            publisher,
            settings.response_exchange,
            chores=[
                SnapshotTaker(
                    engine,
                    publisher,
                    topology,
                    settings.snapshot_interval,
                    timedelta(seconds=settings.file_retention),
                    clock=utcnow,
                ),
                QuotaAnnouncer(settings.api_tokens_file, publisher, EventFactory("api")),
            ],
        ),
        engine,
        HeartbeatListener(settings.amqp_url, topology, "api"),
    )
    metrics = ApiMetrics(engine, projection.consumer, settings.runner_deadline)
    consumer = StreamConsumer(
        settings.amqp_url,
        topology,
        engine,
        projection,
        on_committed=metrics.committed,
        dead_letter_retention=settings.file_retention,
    )
    position = ProjectionCollector(
        engine,
        projection.consumer,
        projection.offsets,
        projection.dead_letters,
        StreamTail(settings.amqp_url, topology),
    )
    metrics.watch(position)
    lock = LeaderLock(settings.amqp_url, topology, projector_role(settings.database_url_for("api")))
    threading.Thread(
        target=project_while_leading,
        args=(lock, consumer, stop),
        name="api-projection",
        daemon=True,
    ).start()
    files = files_node(settings, topology)
    deps = ApiDeps(
        settings=settings,
        log=publisher,
        jobs=JobStore(engine),
        recent=RecentSubmissions(),
        new_event=EventFactory("api"),
        new_job_id=lambda: str(uuid.uuid4()),
        monitor=Monitor(engine, metrics, position, max_lag_from_env()),
        filestore=FilestoreClient(files, settings.namespace),
        runner_files=RunnerFilesClient(files, settings.namespace),
        outputs=OutputStore(engine),
        runners=RunnerStore(engine),
    )
    admission = Admission.from_settings(settings)
    metrics.watch(AdmissionCollector(admission))
    return create_app(deps, admission)


def files_node(settings: Settings, topology: Topology) -> Node:
    """The worker's end of file transfers (uploads, downloads, live reads), on its own
    connections so a large file never delays an event's append."""
    publisher = Publisher(settings.amqp_url, topology, "api-files", settings.publish_timeout)
    config = NodeConfig(
        settings.amqp_url, f"{settings.namespace}.api", timeout=settings.transfer_timeout
    )
    return Node(config, publisher).start(wait=2.0)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings):
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self._settings
        self.cfg.set("bind", s.api_bind)
        self.cfg.set("workers", s.api_workers)
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("threads", s.api_threads)
        self.cfg.set("timeout", 60)
        self.cfg.set("graceful_timeout", 10)
        self.cfg.set("keepalive", 5)
        self.cfg.set("accesslog", None)
        self.cfg.set("limit_request_line", 8190)
        self.cfg.set("limit_request_field_size", 16384)

    def load(self) -> Any:
        # Runs in each worker after the fork: connections and threads belong to the worker.
        return build(self._settings, threading.Event())


def refuse_a_log_behind_at_start(settings: Settings, engine: sa.Engine) -> None:
    """Raise LogBehindProjection if the API's database has applied events the stream lacks."""
    topology = Topology.from_settings(settings)
    connection = connect(settings.amqp_url, topology.connection_name("api-start"))
    try:
        topology.declare(connection.channel())  # a deleted stream reads as an empty one
    finally:
        connection.close()
    refuse_a_log_behind(
        ApiProjection.consumer,
        stored_position(engine, ApiProjection.offsets, ApiProjection.consumer),
        start_check_tail(settings.amqp_url, topology),
        topology.events_stream,
    )


def serve(settings: Settings) -> None:
    # Before anything binds: no tokens, no address but loopback (raises ConfigError).
    exposure = check_exposure(settings)
    SecretBox.from_settings(settings)  # a malformed FREIGHT_SECRET_KEY stops it here
    engine = create_engine(settings.database_url_for("api"))
    migrate(engine, "api")
    # The workers project on threads, whose death cannot stop gunicorn: refuse here instead.
    refuse_a_log_behind_at_start(settings, engine)
    engine.dispose()
    log.info(exposure)
    if settings.api_threads <= settings.api_max_concurrent:
        log.warning(
            "FREIGHT_API_THREADS=%d is not above FREIGHT_API_MAX_CONCURRENT=%d: requests past "
            "capacity queue in gunicorn, unseen, instead of being answered 503 at once",
            settings.api_threads,
            settings.api_max_concurrent,
        )
    log.info("API listening on http://%s", settings.api_bind)
    _Gunicorn(settings).run()
