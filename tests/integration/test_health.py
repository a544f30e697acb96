"""/healthz, /readyz and /metrics on the API as gunicorn's workers build it (`main.build`),
over the real RabbitMQ and database: what an operator's probes and Prometheus would see."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import falcon.testing
import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from freight_server.services.api import schema
from freight_server.services.api.health import Monitor
from freight_server.services.api.main import build
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, EventType
from freight_server.shared.metrics import ProjectionCollector, StreamTail
from tests.waiting import wait_until


def start_api(settings: Settings, stop: threading.Event) -> falcon.testing.TestClient:
    migrate(create_engine(settings.database_url_for("api")), "api")
    return falcon.testing.TestClient(build(settings, stop))


@pytest.fixture
def api(settings: Settings) -> Iterator[falcon.testing.TestClient]:
    stop = threading.Event()
    yield start_api(settings, stop)
    stop.set()


@pytest.fixture
def log(settings: Settings) -> Iterator[Publisher]:
    publisher = Publisher(settings.amqp_url, Topology.from_settings(settings), "test")
    yield publisher
    publisher.close()


def samples(api: falcon.testing.TestClient) -> dict[tuple[str, frozenset], float]:
    result = api.simulate_get("/metrics")
    assert result.status_code == 200, result.text
    assert result.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(result.text)
        for s in family.samples
    }


def metric(api: falcon.testing.TestClient, name: str, **labels: str) -> float | None:
    return samples(api).get((name, frozenset(labels.items())))


def test_healthz_says_alive(api):
    assert api.simulate_get("/healthz").json == {"status": "ok"}


def test_readyz_once_database_broker_and_projection_are_there(api):
    result = wait_until(
        lambda: (r := api.simulate_get("/readyz")).status_code == 200 and r,
        what="the API to be ready",
    )
    checks = result.json["checks"]
    assert result.json["status"] == "ready"
    assert checks["database"]["ok"] and checks["broker"]["ok"]
    assert checks["projection"] == {"ok": True, "lag": 0, "max_lag": 1000}


def test_readyz_names_what_is_unreachable(settings, tmp_path):
    stop = threading.Event()
    away = replace(settings, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    try:
        api = start_api(away, stop)
        result = api.simulate_get("/readyz")
        assert result.status_code == 503
        assert result.json["error"] == "not_ready"
        assert "broker" in result.json["message"] and "projection" in result.json["message"]
        assert result.json["checks"]["database"] == {"ok": True}
    finally:
        stop.set()


def test_readyz_and_metrics_when_the_database_is_unreachable(settings):
    stop = threading.Event()
    away = replace(settings, database_url="postgresql://postgres@127.0.0.1:1/freight")
    try:
        api = falcon.testing.TestClient(build(away, stop))
        result = api.simulate_get("/readyz")
        assert result.status_code == 503
        assert result.json["checks"]["database"]["ok"] is False
        assert "database unreachable" in result.json["message"]
        scrape = api.simulate_get("/metrics")
        assert scrape.status_code == 503 and scrape.json["error"] == "unavailable"
    finally:
        stop.set()


def test_readyz_fails_while_the_projection_is_too_far_behind(settings, log):
    """Events appended while nothing projects them: the lag is counted against the bound."""
    engine = create_engine(settings.database_url_for("api"))
    migrate(engine, "api")
    new_event = EventFactory("scheduler")
    log.append(*(new_event(EventType.SCHEDULER_STARTED) for _ in range(5)))
    collector = ProjectionCollector(
        engine,
        "api",
        schema.offsets,
        schema.dead_letters,
        StreamTail(settings.amqp_url, Topology.from_settings(settings), cache_for=0),
    )
    assert collector.lag() == 5
    monitor = Monitor(engine, None, collector, max_lag=4)  # type: ignore[arg-type]
    checks = monitor.readiness()
    assert checks["projection"] == {"ok": False, "lag": 5, "max_lag": 4}


def test_metrics_tell_jobs_queue_runners_latency_rates_and_dead_letters(api, settings, log):
    submitted = api.simulate_post("/jobs", json={"command": "sleep 1", "gpus": 1})
    assert submitted.status_code == 201
    queued = api.simulate_post("/jobs", json={"command": "true"}).json["job_id"]
    job_id = submitted.json["job_id"]
    gpus = [{"index": i, "uuid": f"GPU-{i}", "name": "sim", "memory_mb": 1024} for i in (0, 1)]
    runner = EventFactory("runner:gpu-1")
    log.append(
        runner(
            EventType.RUNNER_HEARTBEAT,
            runner="gpu-1",
            slots=4,
            gpus=gpus,
            running=[f"{job_id}/1"],
            free={"slots": 3, "gpus": ["GPU-1"], "cpus": 3.0, "memory_mb": 1000},
        ),
        EventFactory("scheduler")(
            EventType.JOB_ASSIGNED, job_id, runner="gpu-1", attempt=1, gpus=gpus[:1]
        ),
        runner(EventType.JOB_STARTED, job_id, runner="gpu-1", attempt=1, container="c"),
    )
    poison(settings)

    wait_until(
        lambda: metric(api, "freight_jobs", status="RUNNING") == 1,
        what="the started job in freight_jobs",
    )
    assert metric(api, "freight_jobs", status="QUEUED") == 1, queued
    assert metric(api, "freight_jobs", status="COMPLETE") == 0
    assert metric(api, "freight_queue_depth") == 1
    assert metric(api, "freight_runners", state="live") == 1
    assert metric(api, "freight_runner_slots", runner="gpu-1") == 4
    assert metric(api, "freight_runner_slots_used", runner="gpu-1") == 1
    assert metric(api, "freight_runner_gpus", runner="gpu-1") == 2
    assert metric(api, "freight_runner_gpus_used", runner="gpu-1") == 1
    applied = "freight_events_applied_total"
    # Counted once the batch committed, a moment after its rows can be read.
    wait_until(
        lambda: metric(api, applied, consumer="api", service="runner", type="JobStarted") == 1,
        what="the committed events counted",
    )
    assert metric(api, "freight_job_start_latency_seconds_count") == 1
    assert metric(api, applied, consumer="api", service="api", type="JobSubmitted") == 2
    assert metric(api, applied, consumer="api", service="runner", type="JobStarted") == 1
    assert metric(api, applied, consumer="api", service="scheduler", type="JobAssigned") == 1
    wait_until(
        lambda: metric(api, "freight_dead_letters", consumer="api") == 1,
        what="the poison message counted",
    )
    assert metric(api, "freight_projection_lag_events", consumer="api") == 0
    assert metric(api, "freight_projection_position", consumer="api") == 5  # six events


def test_a_lost_runner_leaves_the_capacity_figures(api, log):
    runner = EventFactory("runner:gone")
    log.append(runner(EventType.RUNNER_HEARTBEAT, runner="gone", slots=2, gpus=[], running=[]))
    wait_until(lambda: metric(api, "freight_runners", state="live") == 1, what="a live runner")
    log.append(EventFactory("scheduler")(EventType.RUNNER_LOST, runner="gone", jobs=[]))
    wait_until(lambda: metric(api, "freight_runners", state="lost") == 1, what="a lost runner")
    assert metric(api, "freight_runner_slots", runner="gone") is None


def poison(settings: Settings) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        Topology.from_settings(settings).declare(channel)
        channel.basic_publish("", settings.events_stream, b"\xff not an event")
    finally:
        connection.close()
