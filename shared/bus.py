"""RabbitMQ: the topology every service declares, and a thread-safe confirmed publisher.

pika connections are not thread-safe, so one thread owns the publishing connection and every
other thread hands it messages through a queue, waiting for the broker's confirm.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from shared.config import Settings
from shared.events import Event, encode

log = logging.getLogger(__name__)

AMQP_ERRORS = (
    pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
)


class BrokerUnavailable(RuntimeError):
    """RabbitMQ cannot be reached or did not confirm a publish; nothing was accepted."""


@dataclass(frozen=True)
class Topology:
    namespace: str
    events_stream: str
    response_exchange: str
    response_queue: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            settings.namespace,
            settings.events_stream,
            settings.response_exchange,
            settings.response_queue,
        )

    def connection_name(self, role: str) -> str:
        """How RabbitMQ's management tools show a connection: `<namespace>/<role>`."""
        return f"{self.namespace}/{role}"

    def declare(self, channel: Any) -> None:
        """Idempotent; every service declares the whole topology when it connects."""
        channel.queue_declare(
            self.events_stream, durable=True, arguments={"x-queue-type": "stream"}
        )
        channel.exchange_declare(self.response_exchange, exchange_type="topic", durable=True)
        channel.queue_declare(self.response_queue, durable=True)
        channel.queue_bind(self.response_queue, self.response_exchange, routing_key="#")


def connect(amqp_url: str, name: str, heartbeat: int = 30) -> pika.BlockingConnection:
    return pika.BlockingConnection(connection_parameters(amqp_url, name, heartbeat))


def connection_parameters(amqp_url: str, name: str, heartbeat: int = 30) -> pika.URLParameters:
    """FREIGHT_AMQP_URL as pika's parameters. `amqps://` is TLS (port 5671 unless named),
    verified against the system's CAs or `?ssl_options={'ca_certs': '/path/ca.pem'}`; pika checks
    that the broker's certificate names the URL's host."""
    params = pika.URLParameters(amqp_url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 30
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.client_properties = {"connection_name": name}
    return params


@dataclass(frozen=True)
class Message:
    exchange: str
    routing_key: str
    body: bytes
    properties: pika.BasicProperties = field(default_factory=pika.BasicProperties)


class Publisher:
    """Publishes with confirms, persistent delivery and `mandatory`; unroutable is an error."""

    def __init__(self, amqp_url: str, topology: Topology, name: str, timeout: float = 5.0):
        self._url = amqp_url
        self._topology = topology
        self._name = name
        self._timeout = timeout
        self._requests: queue.Queue[tuple[Sequence[Message], Future[None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"{name}-publisher", daemon=True)
        self._thread.start()

    def append(self, *events: Event) -> None:
        """Append events to the log; returns once RabbitMQ has confirmed every one."""
        self.publish(
            [
                Message(
                    exchange="",
                    routing_key=self._topology.events_stream,
                    body=encode(e),
                    properties=pika.BasicProperties(
                        content_type="application/json",
                        delivery_mode=pika.DeliveryMode.Persistent,
                        message_id=e.event_id,
                        type=e.type,
                        headers={"job_id": e.job_id} if e.job_id else None,
                    ),
                )
                for e in events
            ]
        )

    def publish(self, messages: Sequence[Message]) -> None:
        done: Future[None] = Future()
        self._requests.put((messages, done))
        try:
            done.result(timeout=self._timeout)
        except TimeoutError:
            done.cancel()
            raise BrokerUnavailable(f"RabbitMQ did not confirm within {self._timeout:g}s") from None

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._retry_at = 0.0
        self._backoff = 0.2
        while True:
            try:
                item = self._requests.get(timeout=5)
            except queue.Empty:
                self._keep_alive()
                continue
            if item is None:
                break
            messages, done = item
            if done.set_running_or_notify_cancel():
                self._publish_one_request(messages, done)
        _close_quietly(self._connection)

    def _publish_one_request(self, messages: Sequence[Message], done: Future[None]) -> None:
        # A connection that went stale while idle gets one fresh retry before the caller
        # hears about it; the retry may duplicate a message, which every consumer tolerates.
        for retry in (True, False):
            try:
                channel = self._ensure_channel()
                for m in messages:
                    channel.basic_publish(
                        m.exchange, m.routing_key, m.body, m.properties, mandatory=True
                    )
                done.set_result(None)
                return
            except pika.exceptions.UnroutableError:
                done.set_exception(BrokerUnavailable("RabbitMQ could not route the message"))
                return
            except pika.exceptions.NackError:
                done.set_exception(BrokerUnavailable("RabbitMQ refused the message"))
                return
            except BrokerUnavailable as exc:
                done.set_exception(exc)
                return
            except AMQP_ERRORS as exc:
                log.warning("publisher lost RabbitMQ: %r", exc)
                self._drop_connection()
                if not retry:
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, 5.0)
                    done.set_exception(BrokerUnavailable(f"RabbitMQ is unreachable: {exc!r}"))

    def _ensure_channel(self) -> Any:
        if self._channel is None:
            if time.monotonic() < self._retry_at:
                raise BrokerUnavailable("RabbitMQ is unreachable; retrying shortly")
            self._connection = connect(self._url, self._topology.connection_name(self._name))
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
            self._topology.declare(self._channel)
            self._backoff = 0.2
        return self._channel

    def _keep_alive(self) -> None:
        """Service AMQP heartbeats while idle, so the broker keeps the connection."""
        if self._connection is None:
            return
        try:
            self._connection.process_data_events(time_limit=0)
        except AMQP_ERRORS:
            self._drop_connection()

    def _drop_connection(self) -> None:
        _close_quietly(self._connection)
        self._connection = self._channel = None


def _close_quietly(connection: pika.BlockingConnection | None) -> None:
    if connection is None:
        return
    try:
        if connection.is_open:
            connection.close()
    except AMQP_ERRORS:
        pass
