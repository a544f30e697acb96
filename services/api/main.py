"""`freight serve api`: gunicorn serving the falcon app, each worker with its projection."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import falcon
from gunicorn.app.base import BaseApplication

from services.api.app import create_app
from services.api.jobs import ApiDeps
from services.api.projection import ApiProjection
from services.api.store import JobStore, RecentSubmissions
from shared.bus import Publisher, Topology
from shared.config import Settings
from shared.consumer import StreamConsumer
from shared.db import create_engine, migrate
from shared.events import EventFactory

log = logging.getLogger(__name__)


def build(settings: Settings, stop: threading.Event) -> falcon.App:
    """The app with its projection running in a background thread until `stop` is set."""
    engine = create_engine(settings.database_url_for("api"))
    topology = Topology.from_settings(settings)
    publisher = Publisher(settings.amqp_url, topology, "api", settings.publish_timeout)
    projection = ApiProjection(engine, publisher, settings.response_exchange)
    consumer = StreamConsumer(settings.amqp_url, topology, engine, projection)
    threading.Thread(target=consumer.run, args=(stop,), name="api-projection", daemon=True).start()
    deps = ApiDeps(
        settings=settings,
        log=publisher,
        jobs=JobStore(engine),
        recent=RecentSubmissions(),
        new_event=EventFactory("api"),
        new_job_id=lambda: str(uuid.uuid4()),
    )
    return create_app(deps)


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


def serve(settings: Settings) -> None:
    migrate(create_engine(settings.database_url_for("api")), "api")
    log.info("API listening on http://%s", settings.api_bind)
    _Gunicorn(settings).run()
