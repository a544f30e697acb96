"""`freight serve filestore`: owns the bytes. Serves uploads and downloads over RabbitMQ and
follows the log to know which blobs jobs still need."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta

from freight_server.services.filestore.blobs import LocalBlobStore
from freight_server.services.filestore.logs import LogStore
from freight_server.services.filestore.projection import FilestoreProjection
from freight_server.services.filestore.retention import Retention
from freight_server.services.filestore.server import FilestoreServer
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, utcnow
from freight_server.shared.filestore_protocol import filestore_queue
from freight_server.shared.rpc import Node, NodeConfig
from freight_server.shared.runtime import stop_on_signals

log = logging.getLogger(__name__)


@dataclass
class Filestore:
    store: LocalBlobStore
    retention: Retention
    node: Node
    consumer: StreamConsumer
    publisher: Publisher

    def run(self, stop: threading.Event) -> None:
        """Follow the log until `stop` is set (requests are served meanwhile), then close."""
        try:
            self.consumer.run(stop)
        finally:
            self.node.close()
            self.publisher.close()


def build(settings: Settings) -> Filestore:
    engine = create_engine(settings.database_url_for("filestore"))
    migrate(engine, "filestore")
    store = LocalBlobStore(settings.home / "blobs")
    store.discard_partial_uploads()
    topology = Topology.from_settings(settings)
    publisher = Publisher(settings.amqp_url, topology, "filestore", settings.publish_timeout)
    logs = LogStore(settings.home / "logs")
    retention = Retention(
        engine,
        store,
        logs,
        threading.RLock(),  # a put_many holds it while it writes its pack, then to commit
        timedelta(seconds=settings.file_retention),
        clock=utcnow,
    )
    if orphans := retention.delete_orphan_packs():
        log.warning("deleted %d packs whose blobs were never recorded (a crash)", orphans)
    server = FilestoreServer(
        store, logs, engine, retention, timedelta(seconds=settings.upload_grace), clock=utcnow
    )
    node = Node(
        NodeConfig(
            settings.amqp_url,
            name=f"{settings.namespace}.filestore",
            service_queue=filestore_queue(settings.namespace),
            handlers=server.handlers(),
            timeout=settings.transfer_timeout,
        ),
        publisher,
    ).start()
    projection = FilestoreProjection(
        retention, publisher, EventFactory("filestore"), settings.file_gc_interval
    )
    consumer = StreamConsumer(
        settings.amqp_url,
        topology,
        engine,
        projection,
        dead_letter_retention=settings.file_retention,
    )
    return Filestore(store, retention, node, consumer, publisher)


def serve(settings: Settings) -> None:
    filestore = build(settings)
    log.info("filestore: blobs in %s", (settings.home / "blobs").resolve())
    filestore.run(stop_on_signals())
