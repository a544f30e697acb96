"""The broker goes away and comes back: every service reconnects and carries on, and while it is
away the API refuses quickly instead of accepting what it cannot log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.e2e.conftest import Cluster, running_cluster
from tests.proxy import CuttableProxy
from tests.waiting import wait_until


@pytest.fixture
def proxied(cluster_settings, tmp_path) -> Iterator[tuple[Cluster, CuttableProxy]]:
    """The whole system, talking to RabbitMQ through a proxy the test can cut."""
    real = urlsplit(cluster_settings.amqp_url)
    proxy = CuttableProxy(real.hostname or "127.0.0.1", real.port or 5672)
    netloc = f"{real.username}:{real.password}@127.0.0.1:{proxy.port}"
    settings = replace(
        cluster_settings, amqp_url=urlunsplit(real._replace(netloc=netloc)), publish_timeout=2
    )
    try:
        with running_cluster(settings, tmp_path / "logs") as cluster:
            yield cluster, proxy
    finally:
        proxy.close()


def test_services_survive_the_broker_going_away(proxied):
    cluster, proxy = proxied
    running = cluster.submit("sleep 3")["job_id"]
    cluster.wait_for_status(running, "RUNNING")

    proxy.cut()
    started = time.monotonic()
    refused = requests.post(f"{cluster.url}/jobs", json={"command": "true"}, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"] == "unavailable"
    assert time.monotonic() - started < 5
    proxy.restore()

    # The job that ran through the outage ends normally, and new work flows again.
    assert cluster.wait_for_status(running, "COMPLETE", "FAILED")["status"] == "COMPLETE"
    after = wait_until(
        lambda: (r := requests.post(f"{cluster.url}/jobs", json={"command": "true"})).ok and r,
        what="the API to accept again",
    ).json()["job_id"]
    assert cluster.wait_for_status(after, "COMPLETE", "FAILED")["status"] == "COMPLETE"
