"""One projector per API database.

Several API processes behind a load balancer share one PostgreSQL database. Were each to project,
they would race for the same offset: every batch applied by all of them, committed by one, the
others rolled back, reconnected and replayed, and their projections paused by the consumer's
backoff. So the processes sharing a database elect one of them (RabbitMQ's exclusive queue, as
the scheduler does); the others serve reads from the tables it keeps and take over within
seconds of its death. Processes with a database of their own (SQLite on their host) each lead.
"""

from __future__ import annotations

import hashlib
import socket
import threading

from sqlalchemy.engine import make_url

from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.leader import LeaderLock, lead_while_holding


def projector_role(database_url: str, host: str | None = None) -> str:
    """The leader lock's name: the same for every process writing the same database."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        # A SQLite file is shared only by the processes of one host (gunicorn's workers).
        where = f"{host or socket.gethostname()}:{url.database}"
    else:
        where = f"{url.get_backend_name()}://{url.host}:{url.port}/{url.database}"
    return "api-projection-" + hashlib.sha256(where.encode()).hexdigest()[:12]


def project_while_leading(
    lock: LeaderLock, consumer: StreamConsumer, stop: threading.Event, backoff: float = 5.0
) -> None:
    """Run `consumer` whenever this process holds `lock`, until `stop` is set. Should the
    projection die, the lock goes with it: a standby takes over rather than every process
    serving reads that no longer move."""
    lead_while_holding(lock, stop, consumer.run, backoff=backoff)
