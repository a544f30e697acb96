"""Is the API alive, can it serve, and what is Freight doing.

- `/healthz`: the process answers (liveness).
- `/readyz`: it can serve: its database and RabbitMQ answer, and the tables it reads are within
  `FREIGHT_READY_MAX_LAG` events of the log's tail, whichever process projects them (readiness).
- `/metrics`: Prometheus text. Jobs by state, the queue, runners' capacity and use are read from
  the API's database when scraped, so every API process answers alike; event rates and the
  submit-to-start latency are counted by the process that committed them (sum over processes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import falcon
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from freight_server.services.api import schema
from freight_server.services.api.errors import ApiError
from freight_server.services.api.runners import RunnerUse, as_utc
from freight_server.shared.config import ConfigError
from freight_server.shared.events import Event, EventType, utcnow
from freight_server.shared.jobs import JobView, Status
from freight_server.shared.metrics import BrokerUnreachable, EventCounter, ProjectionCollector

log = logging.getLogger(__name__)

DEFAULT_MAX_LAG = 1000
# Seconds from submission to the container's start: from an idle cluster (sub-second) to a
# queue that waits for GPUs (hours).
START_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 14400)


def max_lag_from_env(env: dict[str, str] | None = None) -> int:
    raw = (os.environ if env is None else env).get("FREIGHT_READY_MAX_LAG", "").strip()
    if not raw:
        return DEFAULT_MAX_LAG
    if not raw.isdigit():
        raise ConfigError(f"FREIGHT_READY_MAX_LAG={raw!r} must be a whole number of events")
    return int(raw)


class JobsCollector(Collector):
    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = schema.jobs
        with self._engine.connect() as connection:
            counts: dict[str, int] = dict(
                connection.execute(
                    sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
                ).all()
            )
        by_state = GaugeMetricFamily("freight_jobs", "Jobs by state.", labels=["status"])
        for status in Status:
            by_state.add_metric([status.value], counts.get(status.value, 0))
        yield by_state
        yield GaugeMetricFamily(
            "freight_queue_depth",
            "Jobs accepted and waiting for capacity (QUEUED).",
            value=counts.get(Status.QUEUED.value, 0),
        )


class RunnersCollector(Collector):
    """Runners by state, and each live runner's slots and GPUs, from their last heartbeats."""

    def __init__(self, engine: sa.Engine, deadline: float, clock: Callable[[], datetime]):
        self._engine = engine
        self._deadline = deadline
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._engine.connect() as connection:
            rows = connection.execute(sa.select(schema.runners)).all()
        now = self._clock()
        states = {"live": 0, "silent": 0, "lost": 0}
        live: list[RunnerUse] = []
        for row in rows:
            if row.lost:
                states["lost"] += 1
            elif (now - as_utc(row.last_seen)).total_seconds() > self._deadline:
                states["silent"] += 1
            else:
                states["live"] += 1
                live.append(RunnerUse.from_heartbeat(row.runner_id, row.heartbeat))
        by_state = GaugeMetricFamily(
            "freight_runners",
            "Runners by state: live (heard within FREIGHT_RUNNER_DEADLINE), silent, lost.",
            labels=["state"],
        )
        for state, count in states.items():
            by_state.add_metric([state], count)
        yield by_state
        for name, what, field in (
            ("freight_runner_slots", "Job slots a live runner offers.", "slots"),
            ("freight_runner_slots_used", "Job slots in use on a live runner.", "slots_used"),
            ("freight_runner_gpus", "GPUs a live runner offers.", "gpus"),
            ("freight_runner_gpus_used", "GPUs held by jobs on a live runner.", "gpus_used"),
        ):
            family = GaugeMetricFamily(name, what, labels=["runner"])
            for use in live:
                family.add_metric([use.runner_id], getattr(use, field))
            yield family


class ApiMetrics:
    """Everything /metrics shows, in a registry of its own (one per worker, one per test app)."""

    def __init__(
        self,
        engine: sa.Engine,
        consumer: str,
        runner_deadline: float,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.registry = CollectorRegistry()
        self._engine = engine
        self._count_events = EventCounter(self.registry).counter_for(consumer)
        self._start_latency = Histogram(
            "freight_job_start_latency_seconds",
            "Seconds from a job's submission to its container's start.",
            buckets=START_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(JobsCollector(engine))
        self.registry.register(RunnersCollector(engine, runner_deadline, clock))

    def watch(self, collector: Collector) -> None:
        self.registry.register(collector)

    def committed(self, events: Sequence[Event]) -> None:
        """The projection's `on_committed` hook: runs once per batch, after its commit. The
        events are counted last, so that a count seen means the rest is observed too."""
        starts = [e for e in events if e.type == EventType.JOB_STARTED and e.job_id]
        if starts:
            try:
                self._observe_starts(starts)
            except Exception:  # a figure lost must never stop the projection
                log.exception("start latency of %d jobs not observed", len(starts))
        self._count_events(events)

    def _observe_starts(self, starts: list[Event]) -> None:
        with self._engine.connect() as connection:
            views = {
                row.job_id: JobView.from_dict(row.view)
                for row in connection.execute(
                    _STARTED, {"ids": sorted({str(e.job_id) for e in starts})}
                )
            }
        for event in starts:
            view = views.get(str(event.job_id))
            # Only a start the fold accepted (not a superseded attempt's) is the job's start.
            if view is not None and view.started_at == event.occurred_at:
                waited = (event.occurred_at - view.created_at).total_seconds()
                self._start_latency.observe(max(0.0, waited))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# Built once: it runs after every batch that started a job.
_STARTED = sa.select(schema.jobs.c.job_id, schema.jobs.c.view).where(
    schema.jobs.c.job_id.in_(sa.bindparam("ids", expanding=True))
)


@dataclass
class Monitor:
    """What /readyz and /metrics look at."""

    engine: sa.Engine
    metrics: ApiMetrics
    projection: ProjectionCollector
    max_lag: int = DEFAULT_MAX_LAG

    def readiness(self) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            checks["database"] = {"ok": True}
        except sa.exc.SQLAlchemyError as exc:
            checks["database"] = {"ok": False, "detail": f"unreachable: {_first_line(exc)}"}
        # The lag is the stored offset (whichever process projects) against the stream's tail,
        # which reading proves RabbitMQ reachable. A dead projector shows as a growing lag.
        try:
            lag = self.projection.lag()
            checks["broker"] = {"ok": True}
            checks["projection"] = {"ok": lag <= self.max_lag, "lag": lag, "max_lag": self.max_lag}
        except BrokerUnreachable as exc:
            checks["broker"] = {"ok": False, "detail": _first_line(exc)}
            checks["projection"] = {"ok": False, "detail": "lag unknown without RabbitMQ"}
        except sa.exc.SQLAlchemyError:
            checks["broker"] = {"ok": True, "detail": "not checked: the database failed first"}
            checks["projection"] = {"ok": False, "detail": "lag unknown without the database"}
        return checks


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Liveness:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Readiness:
    def __init__(self, monitor: Monitor):
        self._monitor = monitor

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = self._monitor.readiness()
        failing = [name for name, check in checks.items() if not check["ok"]]
        if not failing:
            resp.media = {"status": "ready", "checks": checks}
            return
        resp.status = falcon.HTTP_503
        resp.media = {
            "error": "not_ready",
            "message": "not ready: " + ", ".join(_explain(n, checks[n]) for n in failing),
            "checks": checks,
        }


def _explain(name: str, check: dict[str, Any]) -> str:
    if "detail" in check:
        return f"{name} {check['detail']}"
    return f"{name} is {check['lag']} events behind (at most {check['max_lag']})"


class Metrics:
    def __init__(self, monitor: Monitor):
        self._monitor = monitor

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            body = self._monitor.metrics.exposition()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics unavailable: %s", _first_line(exc))
            raise ApiError(
                falcon.HTTP_503, "unavailable", "metrics unavailable: the database did not answer"
            ) from None
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = body


def install(app: falcon.App, monitor: Monitor | None) -> None:
    app.add_route("/healthz", Liveness())
    if monitor is not None:
        app.add_route("/readyz", Readiness(monitor))
        app.add_route("/metrics", Metrics(monitor))
