"""A second scheduler stands by and takes over when the first is killed, placing nothing twice."""

from __future__ import annotations

import requests

from tests.waiting import wait_until


def assignments(cluster, job_id: str) -> list[dict]:
    events = requests.get(f"{cluster.url}/jobs/{job_id}/events").json()["events"]
    return [e for e in events if e["type"] == "JobAssigned"]


def test_standby_takes_over_without_double_placement(cluster):
    cluster.start("scheduler", name="scheduler-b")
    wait_until(lambda: "standing by" in cluster.log_of("scheduler-b"), what="b to stand by")

    before = cluster.submit("true")["job_id"]
    cluster.wait_for_status(before, "COMPLETE")

    cluster.kill("scheduler")  # SIGKILL: no goodbye
    wait_until(
        lambda: "now the active one" in cluster.log_of("scheduler-b"),
        timeout=15,
        what="b to take over",
    )
    after = [cluster.submit("true")["job_id"] for _ in range(3)]
    for job_id in after:
        cluster.wait_for_status(job_id, "COMPLETE", timeout=30)
    for job_id in [before, *after]:
        assert len(assignments(cluster, job_id)) == 1
