"""Runners on other hosts (docs/deploy.md: Many hosts): two runners, each in a network namespace of
its own that reaches RabbitMQ over its veth link only, never over loopback. Jobs are placed on
both; one runner cut off by dropping its link is declared lost and its job retried on the other.

The API, scheduler and filestore run on this side; the runners share this machine's Docker engine
(through its socket, a file) as each would use its own host's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from freight_server.shared.config import Settings
from tests.deploy.netns import Host, Relay, other_host
from tests.e2e.conftest import Cluster, docker_client, free_port, running_cluster, service_env
from tests.waiting import wait_until

pytestmark = pytest.mark.docker

# A job that runs until the test lets it end (a file appears in its container).
HELD = "while [ ! -e /job/release ]; do sleep 0.1; done"


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    with other_host("a") as a, other_host("b") as b:
        yield a, b


@pytest.fixture
def cluster(settings: Settings, tmp_path: Path, hosts: tuple[Host, Host]) -> Iterator[Cluster]:
    broker = urlsplit(settings.amqp_url)
    target = (broker.hostname or "localhost", broker.port or 5672)
    relays = [Relay(host.address, target) for host in hosts]
    configured = replace(
        settings,
        api_bind=f"127.0.0.1:{free_port()}",
        runner_slots=1,
        heartbeat_interval=0.5,
        runner_deadline=4.0,
    )

    def start(cluster: Cluster) -> None:
        for service in ("filestore", "api", "scheduler"):
            cluster.start(service)
        for host, relay in zip(hosts, relays, strict=True):
            # The runner's broker is at this side of its link, where the relay listens.
            netloc = f"{broker.username}:{broker.password}@{relay.address}:{relay.port}"
            start_runner(cluster, host, urlunsplit(broker._replace(netloc=netloc)))

    try:
        with running_cluster(configured, tmp_path / "logs", start=start) as cluster:
            # Each runner's connections came over its own link.
            wait_until(lambda: all(relay.connections for relay in relays), what="both runners")
            yield cluster
    finally:
        for relay in relays:
            relay.close()


def start_runner(cluster: Cluster, host: Host, amqp_url: str) -> None:
    name = runner_name(host)
    log = open(cluster.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    env = service_env(
        cluster.settings,
        amqp_url=amqp_url,
        runner_id=name,
        home=cluster.settings.home / name,
    )
    cluster.processes[name] = subprocess.Popen(
        host.command(sys.executable, "-m", "freight.cli", "serve", "runner"),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def runner_name(host: Host) -> str:
    return f"runner-{host.namespace}"


def release(job_id: str, attempt: int) -> None:
    """Let a HELD job's attempt end."""
    (container,) = docker_client().containers.list(
        filters={"label": [f"freight.job_id={job_id}", f"freight.attempt={attempt}"]}
    )
    assert container.exec_run(["touch", "/job/release"]).exit_code == 0


def test_jobs_spread_over_hosts_and_a_cut_off_runner_is_lost_and_its_job_retried(
    cluster: Cluster, hosts: tuple[Host, Host]
):
    runners = {runner_name(host): host for host in hosts}
    first = cluster.submit(HELD, max_attempts=2)["job_id"]
    second = cluster.submit(HELD, max_attempts=2)["job_id"]
    placed = {job: cluster.wait_for_status(job, "RUNNING")["runner"] for job in (first, second)}
    assert set(placed.values()) == set(runners), placed  # one slot each: one job on each host

    cut_off = placed[first]
    runners[cut_off].cut()
    release(second, attempt=1)  # the other runner's slot frees up
    assert cluster.wait_for_status(second, "COMPLETE")["runner"] == placed[second]

    def retried() -> dict[str, Any] | None:
        job = cluster.job(first)
        return job if job["attempt"] == 2 and job["status"] == "RUNNING" else None

    moved = wait_until(retried, timeout=60, what=f"job {first} to run again once {cut_off} is lost")
    assert moved["runner"] == placed[second]
    release(first, attempt=2)
    done = cluster.wait_for_status(first, "COMPLETE")
    assert (done["runner"], done["attempt"]) == (placed[second], 2)

    events = requests.get(f"{cluster.url}/jobs/{first}/events").json()["events"]
    lost = [e["data"]["attempt"] for e in events if e["data"].get("reason") == "runner lost"]
    assert lost == [1], events
    assert f"runner {cut_off} is lost" in cluster.log_of("scheduler")
    # The cut-off host is gone for good: its runner cannot even say goodbye to the broker.
    cluster.kill(cut_off)
