"""A runner killed -9 and restarted: it re-adopts the containers of its running attempts (no
second start), follows them to their end, creates the container of an attempt it launched but
had not made yet, keeps each job's timeout, and removes containers that nothing owns."""

from __future__ import annotations

from datetime import datetime, timedelta

import requests

from freight_server.services.runner import schema
from freight_server.shared.db import create_engine
from freight_server.shared.events import utcnow
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
        listed = docker_client().containers.list(
            all=True, filters={"id": orphan.id}, ignore_removed=True
        )
        return not listed

    wait_until(gone, timeout=30, what="the orphan to be removed")


def test_an_attempt_launched_before_its_container_existed_is_created_after_a_restart(cluster):
    # A first job proves the runner up (its database migrated, its heartbeats read).
    cluster.wait_for_status(cluster.submit("true")["job_id"], "COMPLETE")
    cluster.kill("runner")
    # Still within its deadline, the runner is given the job while it is down...
    job_id = cluster.submit("echo made after the restart")["job_id"]
    cluster.wait_for_status(job_id, "PENDING")
    # ...and its database says it launched the attempt, as a runner killed while pulling the
    # image would leave it: no container was ever made.
    settings = cluster.settings
    engine = create_engine(settings.database_url_for("runner"))
    with engine.begin() as connection:
        connection.execute(
            schema.attempts.insert().values(
                job_id=job_id, attempt=1, runner_id=settings.runner_id, launched_at=utcnow()
            )
        )
    engine.dispose()
    cluster.restart("runner")

    job = cluster.wait_for_status(job_id, "COMPLETE", "FAILED", timeout=60)
    assert (job["status"], job["attempt"]) == ("COMPLETE", 1), job["reason"]
    assert requests.get(f"{cluster.url}/jobs/{job_id}/logs").text == "made after the restart\n"


def test_a_timeout_counts_from_the_start_the_log_records_across_a_restart(cluster):
    timeout = 12.0
    job_id = cluster.submit("sleep 300", timeout=str(timeout))["job_id"]
    started_at = datetime.fromisoformat(cluster.wait_for_status(job_id, "RUNNING")["started_at"])
    cluster.kill("runner")
    # Back at 0.8 of the timeout: a deadline counted from the re-adoption would end the job
    # no sooner than 1.8 timeouts after its start.
    restart_at = started_at + timedelta(seconds=0.8 * timeout)
    wait_until(lambda: utcnow() >= restart_at, timeout=timeout, what="0.8 of the timeout")
    cluster.restart("runner")

    job = cluster.wait_for_status(job_id, "FAILED", "COMPLETE", timeout=60)
    assert job["reason"] == f"timed out after {timeout:g}s"
    ran_for = (datetime.fromisoformat(job["finished_at"]) - started_at).total_seconds()
    # The slack covers the runner's start and the stop's grace, well under 0.8 of the timeout.
    assert timeout <= ran_for < timeout + 0.6 * timeout, ran_for
