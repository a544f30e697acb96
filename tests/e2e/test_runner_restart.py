"""A runner killed -9 and restarted: it re-adopts the containers of its running attempts (no
second start), follows them to their end, and removes containers that nothing owns."""

from __future__ import annotations

import requests

from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import docker_client
from tests.waiting import wait_until


def test_restarted_runner_re_adopts_its_running_container(cluster):
    job_id = cluster.submit("sleep 4; echo done")["job_id"]
    cluster.wait_for_status(job_id, "RUNNING")
    cluster.kill("runner")
    cluster.restart("runner")

    job = cluster.wait_for_status(job_id, "COMPLETE", "FAILED", timeout=60)
    assert job["status"] == "COMPLETE" and job["attempt"] == 1
    events = requests.get(f"{cluster.url}/jobs/{job_id}/events").json()["events"]
    assert [e["type"] for e in events].count("JobFinished") == 1


def test_containers_nothing_owns_are_removed(cluster):
    settings = cluster.settings
    orphan = docker_client().containers.create(
        TEST_IMAGE,
        ["sleep", "300"],
        network_mode="none",
        labels={
            "freight.namespace": settings.namespace,
            "freight.runner": settings.runner_id,
            "freight.job_id": "00000000-0000-4000-8000-000000000000",
            "freight.attempt": "1",
        },
    )
    orphan.start()
    cluster.kill("runner")
    cluster.restart("runner")

    def gone() -> bool:
        return orphan.id not in {c.id for c in docker_client().containers.list(all=True)}

    wait_until(gone, timeout=30, what="the orphan to be removed")
