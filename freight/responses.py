"""Listen on `job_response` for one job: a private queue bound to that job's routing key, so
the listener never takes messages meant for the shared `job_response` queue's subscribers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pika
import pika.exceptions

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.0


class ResponsesUnreachable(Exception):
    """The broker or the exchange is not there; the caller polls the API instead."""


class JobResponses:
    """Bound on construction; iterate `arrivals(every)` for the response (or None each
    `every` seconds of silence, so the caller can poll the API and redraw in between)."""

    def __init__(self, amqp_url: str, exchange: str, job_id: str):
        self._job_id = job_id
        try:
            params = pika.URLParameters(amqp_url)
            params.connection_attempts = 1
            params.socket_timeout = CONNECT_TIMEOUT
            params.blocked_connection_timeout = CONNECT_TIMEOUT
            params.client_properties = {"connection_name": f"freight-wait-{job_id}"}
            self._connection = pika.BlockingConnection(params)
        except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
            where = _safe(amqp_url)
            raise ResponsesUnreachable(f"cannot reach RabbitMQ at {where}: {exc}") from exc
        try:
            self._channel = self._connection.channel()
            # Passive: the API declares the exchange; a client must not create a wrong one.
            self._channel.exchange_declare(exchange, passive=True)
            queue = self._channel.queue_declare("", exclusive=True, auto_delete=True)
            self._queue = queue.method.queue
            self._channel.queue_bind(self._queue, exchange, routing_key=job_id)
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise ResponsesUnreachable(f"cannot listen on exchange {exchange!r}: {exc}") from exc

    def arrivals(self, every: float) -> Iterator[dict[str, Any] | None]:
        try:
            for method, _, body in self._channel.consume(
                self._queue, auto_ack=True, inactivity_timeout=every
            ):
                if method is None:
                    yield None
                    continue
                message = _parse(body)
                if message is not None and message.get("job_id") == self._job_id:
                    yield message
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise ResponsesUnreachable(f"lost RabbitMQ while waiting: {exc}") from exc

    def close(self) -> None:
        try:
            if self._connection.is_open:
                self._connection.close()
        except (pika.exceptions.AMQPError, OSError):
            log.debug("closing the job_response connection failed", exc_info=True)


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return message if isinstance(message, dict) else None


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
