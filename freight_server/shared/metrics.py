"""Prometheus metrics every projecting service exports, and the stream's tail they are measured
against.

A service's figures come from two places. What is *state* (its stored offset, its dead letters)
is read from its database when scraped, so every process sharing that database answers alike.
What is *flow* (events applied) is counted in-process once a batch commits: processes contending
for one consumer's offset commit disjoint batches, so summing over them counts each event once.

The API serves these on `/metrics`; the scheduler and the runner on `FREIGHT_METRICS_PORT`.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from freight_server.shared.bus import AMQP_ERRORS, Topology, connect
from freight_server.shared.config import ConfigError
from freight_server.shared.events import Event

log = logging.getLogger(__name__)

METRICS_PORT_VARIABLE = "FREIGHT_METRICS_PORT"


class BrokerUnreachable(RuntimeError):
    """The stream's tail could not be read: RabbitMQ did not answer."""


class StreamTail:
    """The offset of the newest event in the stream.

    AMQP reports no message count for a stream, so the tail is read by consuming from "last"
    (the stream's last chunk) and taking the highest offset delivered. A reading is kept for
    `cache_for` seconds: readiness probes and scrapes should not each open a connection.
    """

    def __init__(
        self,
        amqp_url: str,
        topology: Topology,
        cache_for: float = 2.0,
        first_wait: float = 0.5,
        quiet: float = 0.05,
    ):
        self._url = amqp_url
        self._topology = topology
        self._cache_for = cache_for
        self._first_wait = first_wait
        self._quiet = quiet
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._offset: int | None = None

    def offset(self) -> int | None:
        """The newest offset, or None while the stream is empty. Raises BrokerUnreachable."""
        with self._lock:
            if time.monotonic() - self._read_at > self._cache_for:
                self._offset = self._read()
                self._read_at = time.monotonic()
            return self._offset

    def _read(self) -> int | None:
        try:
            connection = connect(self._url, self._topology.connection_name("tail-probe"))
        except AMQP_ERRORS as exc:
            raise BrokerUnreachable(f"RabbitMQ is unreachable: {exc!r}") from None
        offsets: list[int] = []
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=2000)

            def delivered(_ch: Any, method: Any, properties: Any, _body: bytes) -> None:
                offsets.append(int((properties.headers or {})["x-stream-offset"]))
                channel.basic_ack(method.delivery_tag)

            channel.basic_consume(
                self._topology.events_stream, delivered, arguments={"x-stream-offset": "last"}
            )
            # The last chunk arrives as one burst: wait for its first message, then until quiet.
            deadline = time.monotonic() + self._first_wait
            while not offsets and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.02)
            seen = -1
            while len(offsets) != seen and len(offsets) < 20_000:
                seen = len(offsets)
                connection.process_data_events(time_limit=self._quiet)
        except AMQP_ERRORS as exc:
            raise BrokerUnreachable(f"RabbitMQ failed while reading the stream: {exc!r}") from None
        finally:
            try:
                if connection.is_open:
                    connection.close()
            except AMQP_ERRORS:
                pass
        return max(offsets) if offsets else None


def projection_lag(tail: int | None, position: int | None) -> int:
    """Events in the log that the projection has not applied yet."""
    if tail is None:
        return 0
    return tail - (-1 if position is None else position)


class ProjectionCollector(Collector):
    """A projection's state, read from its database at scrape time: position, lag, dead letters."""

    def __init__(
        self,
        engine: sa.Engine,
        consumer: str,
        offsets: sa.Table,
        dead_letters: sa.Table,
        tail: StreamTail | None,
    ):
        self._engine = engine
        self._consumer = consumer
        self._offsets = offsets
        self._dead_letters = dead_letters
        self._tail = tail

    def stored_position(self, connection: sa.Connection) -> int | None:
        return connection.execute(
            sa.select(self._offsets.c.position).where(self._offsets.c.consumer == self._consumer)
        ).scalar_one_or_none()

    def lag(self) -> int:
        """Raises BrokerUnreachable or a database error: readiness reports either."""
        tail = self._tail.offset() if self._tail else None
        with self._engine.connect() as connection:
            return projection_lag(tail, self.stored_position(connection))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["consumer"]
        with self._engine.connect() as connection:
            position = self.stored_position(connection)
            dead = connection.execute(
                sa.select(sa.func.count())
                .select_from(self._dead_letters)
                .where(self._dead_letters.c.consumer == self._consumer)
            ).scalar_one()
        yield _gauge(
            "freight_projection_position",
            "The last stream offset this projection committed (-1: none yet).",
            labels,
            [([self._consumer], -1 if position is None else position)],
        )
        yield _gauge(
            "freight_dead_letters",
            "Events this projection could not decode or apply, kept in its dead letters table.",
            labels,
            [([self._consumer], dead)],
        )
        if self._tail is None:
            return
        try:
            lag = projection_lag(self._tail.offset(), position)
        except BrokerUnreachable as exc:
            log.warning("projection lag unknown: %s", exc)
            return
        yield _gauge(
            "freight_projection_lag_events",
            "Events in the log not yet applied by this projection.",
            labels,
            [([self._consumer], lag)],
        )


def _gauge(
    name: str, documentation: str, labels: list[str], samples: list[tuple[list[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def producing_service(producer: str) -> str:
    """`runner:gpu-7` -> `runner`: rates are per service, not per runner."""
    return producer.split(":", 1)[0]


class EventCounter:
    """`freight_events_applied_total`: events a projection committed, by producing service."""

    def __init__(self, registry: CollectorRegistry):
        self._counter = Counter(
            "freight_events_applied",
            "Events committed by this process's projection, by the service that wrote them.",
            ["consumer", "service", "type"],
            registry=registry,
        )

    def counter_for(self, consumer: str) -> Callable[[Sequence[Event]], None]:
        """A StreamConsumer `on_committed` hook."""

        def count(events: Sequence[Event]) -> None:
            # Tallied first: a child's look-up and its lock, once a label set and batch.
            tally = collections.Counter(
                (producing_service(event.producer), event.type) for event in events
            )
            for (service, type), n in tally.items():
                self._counter.labels(consumer, service, type).inc(n)

        return count


class ServiceMetrics:
    """A scheduler's or runner's metrics: its projection's state and flow, on its own port."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.events = EventCounter(self.registry)
        self._lock = threading.Lock()
        self._server: Any = None

    def watch(
        self, engine: sa.Engine, projection: Any, tail: StreamTail | None
    ) -> Callable[[], None]:
        """Export a projection's state until the returned function is called."""
        collector = ProjectionCollector(
            engine, projection.consumer, projection.offsets, projection.dead_letters, tail
        )
        self.registry.register(collector)
        return lambda: self.registry.unregister(collector)

    def serve(self, port: int | None, address: str = "0.0.0.0") -> None:
        """Serve `/metrics` on `port` (once per process; None: not served)."""
        with self._lock:
            if port is None or self._server is not None:
                return
            self._server = start_http_server(port, address, registry=self.registry)
            log.info("metrics on http://%s:%d/metrics", address, port)


def metrics_port_from_env(env: dict[str, str] | None = None) -> int | None:
    """`FREIGHT_METRICS_PORT`: the scheduler's and runner's metrics port; unset serves none."""
    raw = (os.environ if env is None else env).get(METRICS_PORT_VARIABLE, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{METRICS_PORT_VARIABLE}={raw!r} must be a port number")
    return int(raw)


_process_metrics: ServiceMetrics | None = None
_process_lock = threading.Lock()


def process_metrics() -> ServiceMetrics:
    """The one ServiceMetrics of this process: a scheduler re-elected many times, or a runner,
    keeps one port and one set of counters across its projections' lives."""
    global _process_metrics
    with _process_lock:
        if _process_metrics is None:
            _process_metrics = ServiceMetrics()
        return _process_metrics


def serve_metrics_from_env() -> ServiceMetrics:
    """This process's metrics on FREIGHT_METRICS_PORT (if set), before any projection runs."""
    metrics = process_metrics()
    metrics.serve(metrics_port_from_env())
    return metrics


def export_projection(
    amqp_url: str, topology: Topology, engine: sa.Engine, projection: Any
) -> tuple[Callable[[Sequence[Event]], None], Callable[[], None]]:
    """For a service's main(): serve this process's metrics if FREIGHT_METRICS_PORT says so,
    watch `projection`, and return (the consumer's on_committed hook, stop watching)."""
    metrics = serve_metrics_from_env()
    unwatch = metrics.watch(engine, projection, StreamTail(amqp_url, topology))
    return metrics.events.counter_for(projection.consumer), unwatch
