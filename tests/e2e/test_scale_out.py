"""Freight scaled out as docs/deploy.md describes, on one machine: two API processes (as behind a
load balancer) and a scheduler sharing one PostgreSQL database, two runners, one broker. Whichever
API a user reaches, it gives the same answers.

Everything, the runners included, keeps its state in that one database.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from freight_server.shared.config import Settings
from freight_server.shared.db import create_engine, migrate
from tests.conftest import _fresh_postgres_database
from tests.e2e.conftest import Cluster, docker_client, free_port, remove_containers
from tests.waiting import wait_until

pytestmark = pytest.mark.docker


@dataclass
class Scaled:
    cluster: Cluster
    apis: list[str]
    metrics: dict[str, str]  # the scheduler's and a runner's FREIGHT_METRICS_PORT


@pytest.fixture
def shared_database(postgres_server_url: str) -> Iterator[str]:
    yield from _fresh_postgres_database(postgres_server_url)


@pytest.fixture
def scaled(cluster_settings: Settings, shared_database: str, tmp_path: Path) -> Iterator[Scaled]:
    client = docker_client()
    logs = tmp_path / "logs"
    logs.mkdir()
    common = {"database_url": shared_database, "log_format": "json"}
    # Migrated before any service starts, as compose.yaml's one-shot `migrate` does: services
    # starting together on an empty PostgreSQL database would each try to create the tables.
    for service in ("api", "scheduler", "runner", "filestore"):
        migrate(create_engine(shared_database), service)
    cluster = Cluster(cluster_settings, logs)
    namespace = cluster_settings.namespace
    cluster.start("filestore", **common)
    cluster.start("api", name="api-1", **common)
    second_bind = f"127.0.0.1:{free_port()}"
    cluster.start("api", name="api-2", api_bind=second_bind, **common)
    metrics = {"scheduler": f"127.0.0.1:{free_port()}", "runner-1": f"127.0.0.1:{free_port()}"}
    cluster.start("scheduler", metrics_port=metrics["scheduler"].split(":")[1], **common)
    for n in (1, 2):
        cluster.start(
            "runner",
            name=f"runner-{n}",
            runner_id=f"{namespace}-r{n}",
            runner_slots=1,
            **common,
            **({"metrics_port": metrics["runner-1"].split(":")[1]} if n == 1 else {}),
        )
    urls = [cluster.url, f"http://{second_bind}"]
    try:
        for url in urls:
            wait_until(lambda url=url: ready(url), timeout=60, what=f"{url} to be ready")
        yield Scaled(cluster, urls, {k: f"http://{v}" for k, v in metrics.items()})
    finally:
        stop_together(cluster)
        remove_containers(client, namespace)
        for log in sorted(logs.glob("*.log")):
            sys.stderr.write(f"--- {log.stem}\n{log.read_text(errors='replace')[-3000:]}\n")


def stop_together(cluster: Cluster) -> None:
    """SIGTERM to all at once: six graceful stops one after the other take too long."""
    for process in cluster.processes.values():
        process.send_signal(signal.SIGTERM)
    for process in cluster.processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    cluster.processes.clear()


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def get(url: str, path: str, **params: Any) -> Any:
    response = requests.get(f"{url}{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def status_of(url: str, job_id: str) -> Any:
    """The job as that API sees it, or None while it has not projected it yet."""
    response = requests.get(f"{url}/jobs/{job_id}", timeout=10)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def submit(url: str, command: str) -> str:
    response = requests.post(f"{url}/jobs", data={"command": command}, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def lifecycle_lines(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    lines = []
    for log in cluster.logs.glob("*.log"):
        for raw in log.read_text(errors="replace").splitlines():
            if raw.startswith("{") and f'"job_id": "{job_id}"' in raw:
                lines.append(json.loads(raw))
    return lines


def test_two_apis_and_two_runners_on_one_database_give_the_same_answers(scaled, responses):
    first, second = scaled.apis
    cluster = scaled.cluster
    # Each job holds its runner's only slot for a while, so the two land on different runners.
    one = submit(first, "echo one && sleep 2")
    two = submit(second, "echo two && sleep 2")

    # Read each job through the API that did not accept it.
    # (Until the projection has it, the other API rightly answers 404: it never saw the 201.)
    done = {
        one: wait_until(
            lambda: (j := status_of(second, one)) and j["status"] == "COMPLETE" and j,
            timeout=60,
            what=f"{one} COMPLETE through the other API",
        ),
        two: wait_until(
            lambda: (j := status_of(first, two)) and j["status"] == "COMPLETE" and j,
            timeout=60,
            what=f"{two} COMPLETE through the other API",
        ),
    }
    assert {job["runner"] for job in done.values()} == {
        f"{cluster.settings.namespace}-r1",
        f"{cluster.settings.namespace}-r2",
    }
    for job_id in (one, two):
        assert get(first, f"/jobs/{job_id}") == get(second, f"/jobs/{job_id}")
        assert get(first, f"/jobs/{job_id}/events") == get(second, f"/jobs/{job_id}/events")
        assert responses.wait_for(job_id)["status"] == "COMPLETE"
    assert get(first, "/jobs", status="all") == get(second, "/jobs", status="all")

    # State is read from the shared database: both APIs report the same figures. Flow is
    # counted by whichever process committed it: the two APIs' counts add up to each event once.
    complete = ("freight_jobs", frozenset({("status", "COMPLETE")}))
    assert scrape(first)[complete] == scrape(second)[complete] == 2
    finished = (
        "freight_events_applied_total",
        frozenset({("consumer", "api"), ("service", "runner"), ("type", "JobFinished")}),
    )
    in_the_log = sum(
        event["type"] == "JobFinished"
        for job_id in (one, two)
        for event in get(first, f"/jobs/{job_id}/events")["events"]
    )
    wait_until(
        lambda: sum(scrape(url).get(finished, 0) for url in (first, second)) == in_the_log,
        what=f"the {in_the_log} JobFinished events counted once over both APIs",
    )

    # One JSON log line per lifecycle step, each carrying the job's id.
    messages = [line["message"] for line in lifecycle_lines(cluster, one)]
    for step in ("accepted job", "placed job", "launching job", "ended"):
        assert any(step in m for m in messages), (step, messages)

    # The scheduler and the runners export their own projection's figures on their port.
    for name, consumer in (
        ("scheduler", "scheduler"),
        ("runner-1", f"runner:{cluster.settings.namespace}-r1"),
    ):
        figures = scrape(scaled.metrics[name])
        label = frozenset({("consumer", consumer)})
        assert figures[("freight_projection_lag_events", label)] >= 0, name
        assert figures[("freight_dead_letters", label)] == 0, name
        submitted = frozenset({*label, ("service", "api"), ("type", "JobSubmitted")})
        assert figures[("freight_events_applied_total", submitted)] == 2, name

    # The API processes share one projector; when it dies, another takes over.
    projecting = [n for n in ("api-1", "api-2") if "now the active one" in cluster.log_of(n)]
    assert len(projecting) == 1, projecting
    cluster.kill(projecting[0])
    survivor = second if projecting[0] == "api-1" else first
    three = submit(survivor, "echo three")
    wait_until(
        lambda: (
            get(survivor, f"/jobs/{three}")["status"] == "COMPLETE"
            and get(survivor, f"/jobs/{three}/events")["count"] >= 4
        ),
        timeout=30,
        what="the surviving API to project a new job to its end",
    )

    for name, process in cluster.processes.items():
        assert process.poll() is None, f"{name} exited:\n{cluster.log_of(name)[-2000:]}"
