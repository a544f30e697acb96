"""RabbitMQ: the topology every service declares, and a thread-safe confirmed publisher.

pika connections are not thread-safe, so one thread owns the publishing connection and runs its
I/O loop; other threads hand it messages and wait for the broker's confirms. Everything handed
over while earlier messages await their confirms goes out together and is confirmed together
(RabbitMQ acks `multiple`), so many callers share a round trip instead of taking turns.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.select_connection import IOLoop
from pika.spec import Basic

from freight_server.shared.amqp_io import LeanSelectConnection, tune_reads
from freight_server.shared.config import Settings
from freight_server.shared.events import Event, encode

log = logging.getLogger(__name__)

tune_reads()  # larger socket reads for every connection (freight_server/shared/amqp_io.py)

AMQP_ERRORS = (
    pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
)


class BrokerUnavailable(RuntimeError):
    """RabbitMQ cannot be reached or did not confirm a publish; nothing was accepted."""


class ConfirmMissing(BrokerUnavailable):
    """The message went out, or may yet, but RabbitMQ did not confirm it: it may be in the log
    all the same."""


class Unroutable(BrokerUnavailable):
    """RabbitMQ returned a message no queue took: a queue or binding is missing."""


# The heartbeats stream's segments: a few minutes of a large cluster's heartbeats each.
HEARTBEAT_SEGMENT_BYTES = 4 * 1024 * 1024

# RabbitMQ's answer to declaring an existing queue with other arguments.
PRECONDITION_FAILED = 406


@dataclass(frozen=True)
class Declaration:
    """One channel call of the topology.

    `policy`: the bounds of `arguments` as a RabbitMQ policy's definition. A queue that already
    exists without them (RabbitMQ refuses to change a queue's arguments) is kept as it is, and
    the operator is told, once a process, the policy that bounds it."""

    method: str
    arguments: dict[str, Any]
    policy: dict[str, Any] | None = None

    @property
    def keeps_existing(self) -> bool:
        return self.policy is not None

    @property
    def queue(self) -> str:
        return str(self.arguments.get("queue"))

    def policy_command(self) -> str:
        pattern = "^" + re.escape(self.queue) + "$"
        return (
            f"rabbitmqctl set_policy --apply-to queues {self.queue}-bound "
            f"'{pattern}' '{json.dumps(self.policy)}'"
        )

    def warn_kept(self) -> None:
        if self.queue in _warned_kept:
            return
        _warned_kept.add(self.queue)
        log.warning(
            "queue %r exists without Freight's bounds %s, and RabbitMQ does not change an "
            "existing queue's arguments: it keeps its old ones. Apply them with a policy "
            "(docs/deploy.md): %s",
            self.queue,
            self.policy,
            self.policy_command(),
        )


_warned_kept: set[str] = set()


@dataclass(frozen=True)
class Topology:
    namespace: str
    events_stream: str
    response_exchange: str
    response_queue: str
    response_queue_max_length: int = 0  # 0: unbounded
    response_queue_ttl: float = 0.0  # seconds; 0: none
    heartbeat_retention: float = 3600.0  # seconds the heartbeats stream keeps a heartbeat
    log_retention: float = 0.0  # seconds the events stream keeps an event; 0: for ever
    log_max_bytes: int = 0  # bytes the events stream keeps at most; 0: no bound
    log_segment_bytes: int = 64 * 1024 * 1024  # the unit retention deletes in
    snapshot_retention: float = 3 * 24 * 3600.0  # seconds the snapshots stream keeps one

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            settings.namespace,
            settings.events_stream,
            settings.response_exchange,
            settings.response_queue,
            settings.response_queue_max_length,
            settings.response_queue_ttl,
            settings.heartbeat_retention,
            settings.log_retention,
            settings.log_max_bytes,
            settings.log_segment_bytes,
            3 * settings.snapshot_interval,
        )

    @property
    def heartbeats_stream(self) -> str:
        return f"{self.namespace}.heartbeats"

    @property
    def snapshots_stream(self) -> str:
        return f"{self.namespace}.snapshots"

    def connection_name(self, role: str) -> str:
        """How RabbitMQ's management tools show a connection: `<namespace>/<role>`."""
        return f"{self.namespace}/{role}"

    def log_bounds(self) -> dict[str, Any]:
        """The events stream's retention: none by default. With one, a service that joins
        after the stream was truncated starts from a snapshot
        (freight_server/shared/snapshots.py)."""
        bounds: dict[str, Any] = {}
        if self.log_retention:
            bounds["x-max-age"] = f"{max(1, int(self.log_retention))}s"
        if self.log_max_bytes:
            bounds["x-max-length-bytes"] = self.log_max_bytes
        if bounds:
            bounds["x-stream-max-segment-size-bytes"] = self.log_segment_bytes
        return bounds

    def response_queue_bound(self) -> dict[str, Any]:
        """`job_response`'s arguments: bounded, so that a queue nobody reads cannot fill the
        broker's disk; the oldest messages go first."""
        bound: dict[str, Any] = {}
        if self.response_queue_max_length:
            bound["x-max-length"] = self.response_queue_max_length
            bound["x-overflow"] = "drop-head"
        if self.response_queue_ttl:
            bound["x-message-ttl"] = int(self.response_queue_ttl * 1000)
        return bound

    def declarations(self) -> list[Declaration]:
        """The topology as channel calls, in order."""
        stream = {"x-queue-type": "stream"}
        log_bounds = self.log_bounds()
        return [
            # A stream made before its retention was set keeps none until a policy gives it.
            Declaration(
                "queue_declare",
                {
                    "queue": self.events_stream,
                    "durable": True,
                    "arguments": {**stream, **log_bounds},
                },
                policy=_as_policy(log_bounds) if log_bounds else None,
            ),
            Declaration(
                "queue_declare",
                {
                    "queue": self.heartbeats_stream,
                    "durable": True,
                    "arguments": {
                        **stream,
                        "x-max-age": f"{max(1, int(self.heartbeat_retention))}s",
                        # Retention drops whole segments: small ones, or nothing would go.
                        "x-stream-max-segment-size-bytes": HEARTBEAT_SEGMENT_BYTES,
                    },
                },
            ),
            *self._snapshots_declarations(),
            Declaration(
                "exchange_declare",
                {"exchange": self.response_exchange, "exchange_type": "topic", "durable": True},
            ),
            # Deployments from before the bound have the queue without it.
            Declaration(
                "queue_declare",
                {
                    "queue": self.response_queue,
                    "durable": True,
                    "arguments": self.response_queue_bound(),
                },
                policy=_as_policy(self.response_queue_bound()) or None,
            ),
            Declaration(
                "queue_bind",
                {
                    "queue": self.response_queue,
                    "exchange": self.response_exchange,
                    "routing_key": "#",
                },
            ),
        ]

    def _snapshots_declarations(self) -> list[Declaration]:
        """The snapshots stream, needed only by a log with a retention."""
        if not self.log_bounds():
            return []
        arguments = {
            "x-queue-type": "stream",
            "x-max-age": f"{max(1, int(self.snapshot_retention))}s",
            "x-stream-max-segment-size-bytes": self.log_segment_bytes,
        }
        return [
            Declaration(
                "queue_declare",
                {"queue": self.snapshots_stream, "durable": True, "arguments": arguments},
            )
        ]

    def declare(self, channel: Any) -> None:
        """Idempotent; every service declares the whole topology when it connects. A call that
        may be refused goes on a channel of its own, so that `channel` stays open."""
        for step in self.declarations():
            if step.keeps_existing:
                self._declare_or_keep(channel.connection, step)
            else:
                getattr(channel, step.method)(**step.arguments)

    def _declare_or_keep(self, connection: pika.BlockingConnection, step: Declaration) -> None:
        own = connection.channel()
        try:
            getattr(own, step.method)(**step.arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != PRECONDITION_FAILED:
                raise
            step.warn_kept()
        finally:
            if own.is_open:
                own.close()


def _as_policy(arguments: dict[str, Any]) -> dict[str, Any]:
    """Queue arguments as a policy's definition: the same keys without their `x-`."""
    return {key.removeprefix("x-"): value for key, value in arguments.items()}


def connect(amqp_url: str, name: str, heartbeat: int = 30) -> pika.BlockingConnection:
    return pika.BlockingConnection(
        connection_parameters(amqp_url, name, heartbeat), _impl_class=LeanSelectConnection
    )


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
    """Publishes with confirms, persistent delivery and `mandatory`; unroutable is an error.

    `publish` returns once RabbitMQ confirmed every message it was given, or raises
    BrokerUnavailable: nothing is reported accepted that the broker did not take.
    """

    def __init__(self, amqp_url: str, topology: Topology, name: str, timeout: float = 5.0):
        self._params = connection_parameters(amqp_url, topology.connection_name(name))
        self._topology = topology
        self._timeout = timeout
        self._lock = threading.Lock()
        self._waiting: deque[_Request] = deque()  # handed over, not yet sent
        self._loop = _PublishingLoop(self._params, topology, self._take_waiting)
        self._thread = threading.Thread(
            target=self._loop.run, name=f"{name}-publisher", daemon=True
        )
        self._thread.start()

    def append(self, *events: Event) -> None:
        """Append events to the log; returns once RabbitMQ has confirmed every one."""
        self._append_to(self._topology.events_stream, events)

    def send_heartbeat(self, heartbeat: Event) -> None:
        """A runner's heartbeat, on the heartbeats stream (freight_server/shared/heartbeats.py)."""
        self._append_to(self._topology.heartbeats_stream, (heartbeat,))

    def _append_to(self, stream: str, events: Sequence[Event]) -> None:
        self.publish(
            [
                Message(
                    exchange="",
                    routing_key=stream,
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
        self.publish_async(messages).wait()

    def publish_async(self, messages: Sequence[Message]) -> Publishing:
        """Hand `messages` over without waiting for their confirm; `wait()` on the answer
        returns once RabbitMQ confirmed them all, or raises as `publish` does. What is handed
        over goes out in the order it was handed over, so a caller may keep a few batches in
        flight and wait for each in turn."""
        request = _Request(list(messages))
        if not messages:
            request.done.set_result(None)
            return Publishing(request, self._timeout)
        with self._lock:
            self._waiting.append(request)
        self._loop.wake()
        return Publishing(request, self._timeout)

    def declare_topology(self) -> None:
        """Declare the topology again, e.g. once an operator deleted a queue or a binding;
        returns once RabbitMQ has answered every declaration."""
        declared: Future[None] = Future()
        self._loop.redeclare(declared)
        try:
            declared.result(timeout=self._timeout)
        except TimeoutError:
            raise BrokerUnavailable(
                f"RabbitMQ did not answer the declarations within {self._timeout:g}s"
            ) from None

    def close(self) -> None:
        self._loop.stop()
        self._thread.join(timeout=5)

    def _take_waiting(self) -> list[_Request]:
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
        return taken


class Publishing:
    """Messages handed to the publisher: `wait()` for their confirm, within the publisher's
    timeout counted from the handover."""

    def __init__(self, request: _Request, timeout: float):
        self._request = request
        self._timeout = timeout
        self._deadline = time.monotonic() + timeout

    def wait(self) -> None:
        done = self._request.done
        try:
            done.result(timeout=max(0.0, self._deadline - time.monotonic()))
        except TimeoutError:
            if done.cancel():  # the publisher had not taken it: it never goes out
                raise BrokerUnavailable(
                    f"RabbitMQ could not be reached within {self._timeout:g}s"
                ) from None
            raise ConfirmMissing(f"RabbitMQ did not confirm within {self._timeout:g}s") from None


@dataclass(eq=False)
class _Request:
    """One caller's messages: confirmed when every one is, failed when any one is not."""

    messages: list[Message]
    done: Future[None] = field(default_factory=Future)
    unconfirmed: int = 0
    failure: BrokerUnavailable | None = None
    tries: int = 0

    def settle(self) -> None:
        if self.done.done():
            return  # the caller gave up waiting (cancelled)
        if self.failure is not None:
            self.done.set_exception(self.failure)
        else:
            self.done.set_result(None)


def _unconfirmed(request: _Request, reason: Exception) -> BrokerUnavailable:
    if request.tries:
        return ConfirmMissing(f"RabbitMQ went away before confirming: {reason!r}")
    return BrokerUnavailable(f"RabbitMQ is unreachable: {reason!r}")


# Messages in flight when a connection drops are sent once more on the next one (the broker may
# have taken them: consumers tolerate a duplicate, identified by its message id).
MAX_TRIES = 2


class _PublishingLoop:
    """The publisher's thread: a pika SelectConnection and its I/O loop, reconnecting with
    backoff. Only `wake` and `stop` are called from other threads."""

    def __init__(
        self,
        params: pika.ConnectionParameters,
        topology: Topology,
        take_waiting: Callable[[], list[_Request]],
    ):
        self._params = params
        self._topology = topology
        self._take_waiting = take_waiting
        self._ioloop: Any = None
        self._connection: pika.SelectConnection | None = None
        self._channel: Any = None  # set once the topology is declared and confirms are on
        self._next_tag = 1
        self._in_flight: OrderedDict[int, _Request] = OrderedDict()  # delivery tag -> request
        self._pending_until_open: list[_Request] = []  # waiting for a connection being opened
        self._retry_at = 0.0
        self._backoff = 0.2
        self._stopping = False
        self._started = threading.Event()
        self._wake_pending = threading.Event()

    # -- called from any thread ------------------------------------------------------------

    def wake(self) -> None:
        self._started.wait()
        if not self._wake_pending.is_set():  # one wake-up serves every request handed over
            self._wake_pending.set()
            self._ioloop.add_callback_threadsafe(self._send_waiting)

    def stop(self) -> None:
        self._started.wait()
        self._ioloop.add_callback_threadsafe(self._shut_down)

    def redeclare(self, declared: Future[None]) -> None:
        self._started.wait()
        self._ioloop.add_callback_threadsafe(lambda: self._redeclare(declared))

    # -- the loop's thread -----------------------------------------------------------------

    def run(self) -> None:
        self._ioloop = IOLoop()
        self._started.set()
        self._ioloop.start()
        self._ioloop.close()

    def _send_waiting(self) -> None:
        self._wake_pending.clear()
        requests = [r for r in self._take_waiting() if r.done.set_running_or_notify_cancel()]
        if not requests:
            return
        if self._channel is not None:
            for request in requests:
                self._send(request)
            return
        if self._connection is None and time.monotonic() < self._retry_at:
            for request in requests:
                request.failure = BrokerUnavailable("RabbitMQ is unreachable; retrying shortly")
                request.settle()
            return
        self._pending_until_open.extend(requests)
        self._connect()

    def _send(self, request: _Request) -> None:
        request.tries += 1
        request.unconfirmed = len(request.messages)
        try:
            for m in request.messages:
                self._in_flight[self._next_tag] = request
                self._next_tag += 1
                self._channel.basic_publish(
                    m.exchange, m.routing_key, m.body, m.properties, mandatory=True
                )
        except AMQP_ERRORS as exc:
            log.warning("publisher lost RabbitMQ: %r", exc)
            self._lost(exc)

    def _connect(self) -> None:
        if self._connection is not None:
            return  # already connecting
        self._connection = LeanSelectConnection(
            self._params,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
        )

    def _on_connection_open(self, connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_returned)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm)
        self._declare(channel, self._topology.declarations(), lambda: self._on_ready(channel))

    def _redeclare(self, declared: Future[None]) -> None:
        if self._channel is None:
            declared.set_result(None)  # the next connection declares it all anyway
            return
        self._declare(
            self._channel, self._topology.declarations(), lambda: declared.set_result(None)
        )

    def _declare(self, channel: Any, steps: list[Declaration], then: Callable[[], None]) -> None:
        """The topology one step at a time, each after the broker's answer to the one before: a
        publish must not overtake the declaration of the queue it is routed to."""
        if not steps:
            then()
            return
        step, rest = steps[0], steps[1:]
        if step.keeps_existing:
            self._declare_or_keep(step, lambda: self._declare(channel, rest, then))
            return
        getattr(channel, step.method)(
            **step.arguments, callback=lambda _frame: self._declare(channel, rest, then)
        )

    def _declare_or_keep(self, step: Declaration, then: Callable[[], None]) -> None:
        """On a channel of its own, which a refusal closes instead of the publishing one."""
        connection = self._connection
        if connection is None or not connection.is_open:
            return  # lost meanwhile: the next connection starts over

        def on_open(own: Any) -> None:
            own.add_on_close_callback(on_closed)
            getattr(own, step.method)(**step.arguments, callback=lambda _frame: own.close())

        def on_closed(_own: Any, reason: Exception) -> None:
            # Closed by us once declared, or by the broker's refusal: either way, go on.
            if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
                if reason.reply_code == PRECONDITION_FAILED:
                    step.warn_kept()
                else:
                    log.warning("RabbitMQ refused %s %s: %r", step.method, step.arguments, reason)
            if connection.is_open:
                then()

        connection.channel(on_open_callback=on_open)

    def _on_ready(self, channel: Any) -> None:
        self._channel = channel
        self._backoff = 0.2
        self._next_tag = 1
        pending, self._pending_until_open = self._pending_until_open, []
        for request in pending:
            self._send(request)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tags = (
            list(itertools.takewhile(lambda tag: tag <= method.delivery_tag, self._in_flight))
            if method.multiple
            else [method.delivery_tag]
        )
        nacked = isinstance(method, Basic.Nack)
        for tag in tags:
            request = self._in_flight.pop(tag, None)
            if request is None:
                continue
            if nacked and request.failure is None:
                request.failure = BrokerUnavailable("RabbitMQ refused the message")
            request.unconfirmed -= 1
            if request.unconfirmed == 0:
                request.settle()

    def _on_returned(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        """An unroutable message comes back before its confirm: mark the request it came from."""
        for request in self._in_flight.values():
            if any(
                m.exchange == method.exchange
                and m.routing_key == method.routing_key
                and m.body == body
                for m in request.messages
            ):
                request.failure = Unroutable(
                    f"RabbitMQ could not route the message ({method.reply_text})"
                )
                return

    def _on_channel_closed(self, _channel: Any, reason: Exception) -> None:
        if not self._stopping:
            log.warning("publisher's channel closed: %r", reason)
        if self._connection is not None and self._connection.is_open:
            self._connection.close()
        else:
            self._lost(reason)

    def _on_connection_error(self, _connection: Any, error: Exception) -> None:
        log.warning("publisher cannot reach RabbitMQ: %r", error)
        self._lost(error, resend=False)  # callers hear at once that the broker is away

    def _on_connection_closed(self, _connection: Any, reason: Exception) -> None:
        if not self._stopping:
            log.warning("publisher lost RabbitMQ: %r", reason)
        self._lost(reason)

    def _lost(self, reason: Exception, resend: bool = True) -> None:
        """Fail what cannot be sent again; send the rest once more on a new connection."""
        self._connection = self._channel = None
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 5.0)
        unsettled = list(dict.fromkeys(self._in_flight.values())) + self._pending_until_open
        self._in_flight.clear()
        self._pending_until_open = []
        again = []
        for request in unsettled:
            if (
                self._stopping
                or not resend
                or request.tries >= MAX_TRIES
                or request.failure is not None
            ):
                request.failure = request.failure or _unconfirmed(request, reason)
                request.settle()
            else:
                again.append(request)
        if self._stopping:
            self._ioloop.stop()
        elif again:
            self._pending_until_open = again
            self._ioloop.call_later(max(0.0, self._retry_at - time.monotonic()), self._connect)

    def _shut_down(self) -> None:
        self._stopping = True
        if self._connection is not None and self._connection.is_open:
            self._connection.close()  # its close callback stops the loop
        else:
            self._lost(ConnectionError("the publisher was closed"))
