"""The whole life of a job, as the user's document drives it: HTTP in, RabbitMQ out."""

from __future__ import annotations

from datetime import datetime

import requests

from tests.waiting import wait_until


def test_document_example_runs_to_complete(cluster, responses):
    created = cluster.submit("ls -al /tmp", path="/submission")
    assert set(created) == {"job_id", "command", "status"}
    assert created["command"] == "ls -al /tmp" and created["status"] == "QUEUED"

    job = cluster.wait_for_status(created["job_id"], "COMPLETE")
    assert job["exit_code"] == 0 and job["reason"] is None
    assert job["runner"] == cluster.settings.runner_id and job["attempt"] == 1
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]

    message = responses.wait_for(created["job_id"])
    assert message["status"] == "COMPLETE" and message["exit_code"] == 0


def test_a_runner_is_free_again_once_its_jobs_end(cluster):
    """What ended holds nothing: `GET /runners` shows every slot free and no job running, in a
    heartbeat sent after the jobs ended (one from before they started would show that too)."""
    ended = []
    for command in ("true", "exit 3"):
        job_id = cluster.submit(command)["job_id"]
        job = cluster.wait_for_status(job_id, "COMPLETE" if command == "true" else "FAILED")
        ended.append(datetime.fromisoformat(job["finished_at"]))

    def free() -> bool:
        listed = requests.get(f"{cluster.url}/runners", timeout=10).json()["results"]
        mine = [r for r in listed if r["runner_id"] == cluster.settings.runner_id]
        return (
            bool(mine)
            and datetime.fromisoformat(mine[0]["last_heartbeat"]) > max(ended)
            and mine[0]["slots_free"] == mine[0]["slots"]
            and not mine[0]["jobs"]
        )

    wait_until(free, timeout=10, what="the runner to report its slots free")


def test_gpus_are_echoed_when_asked_for(cluster):
    created = cluster.submit("true", gpus="0")
    assert created["gpus"] == 0
    assert cluster.job(created["job_id"])["gpus"] == 0


def test_failing_command_fails_with_its_exit_code(cluster, responses):
    job_id = cluster.submit("echo oops >&2; exit 3")["job_id"]
    job = cluster.wait_for_status(job_id, "FAILED")
    assert job["exit_code"] == 3 and job["reason"] == "exit code 3"
    assert responses.wait_for(job_id)["exit_code"] == 3


def test_environment_reaches_the_command(cluster):
    job_id = cluster.submit('test "$GREETING" = hello', env="GREETING=hello")["job_id"]
    assert cluster.wait_for_status(job_id, "COMPLETE", "FAILED")["status"] == "COMPLETE"


def test_cancel_a_running_job(cluster, responses):
    job_id = cluster.submit("sleep 300")["job_id"]
    cluster.wait_for_status(job_id, "RUNNING")
    response = requests.delete(f"{cluster.url}/jobs/{job_id}")
    assert response.status_code == 202
    assert response.json() == {"id": job_id, "message": f"job {job_id} is shutting down"}

    job = cluster.wait_for_status(job_id, "FAILED", timeout=30)
    assert job["reason"] == "cancelled"
    assert responses.wait_for(job_id)["reason"] == "cancelled"
    again = requests.delete(f"{cluster.url}/jobs/{job_id}")
    assert again.status_code == 409 and again.json()["error"] == "conflict"


def test_timeout_is_enforced_by_the_runner(cluster, responses):
    job_id = cluster.submit("sleep 300", timeout="1")["job_id"]
    job = cluster.wait_for_status(job_id, "FAILED", timeout=30)
    assert job["reason"] == "timed out after 1s"
    assert responses.wait_for(job_id)["status"] == "FAILED"


def test_missing_image_is_freights_failure_not_the_commands(cluster):
    # A registry on loopback that refuses at once: the pull fails without leaving this machine.
    job_id = cluster.submit("true", image="127.0.0.1:1/nothing:here")["job_id"]
    job = cluster.wait_for_status(job_id, "FAILED")
    assert job["exit_code"] is None
    assert job["reason"].startswith("freight error: image '127.0.0.1:1/nothing:here'")


def test_listing_shows_unfinished_jobs_by_default(cluster):
    running = cluster.submit("sleep 300")["job_id"]
    done = cluster.submit("true")["job_id"]
    cluster.wait_for_status(done, "COMPLETE")
    cluster.wait_for_status(running, "RUNNING")

    listed = requests.get(f"{cluster.url}/jobs").json()
    assert [j["job_id"] for j in listed["results"]] == [running] and listed["count"] == 1
    every = requests.get(f"{cluster.url}/jobs", params={"status": "all"}).json()
    assert [j["job_id"] for j in every["results"]] == [done, running]
    complete = requests.get(f"{cluster.url}/jobs", params={"status": "COMPLETE"}).json()
    assert [j["job_id"] for j in complete["results"]] == [done]


def test_lost_runner_fails_its_jobs(cluster):
    cluster.kill("scheduler")
    cluster.start("scheduler", runner_deadline=3)
    job_id = cluster.submit("sleep 300")["job_id"]
    cluster.wait_for_status(job_id, "RUNNING")
    cluster.kill("runner")
    job = cluster.wait_for_status(job_id, "FAILED", timeout=30)
    assert job["reason"] == "runner lost"


def test_job_events_tell_its_history(cluster):
    job_id = cluster.submit("true")["job_id"]
    cluster.wait_for_status(job_id, "COMPLETE")
    history = wait_until(
        lambda: (
            (h := requests.get(f"{cluster.url}/jobs/{job_id}/events").json())["count"] == 5 and h
        ),
        what="five events",
    )
    assert [e["type"] for e in history["events"]] == [
        "JobSubmitted",
        "JobAssigned",
        "JobStarted",
        "JobOutputsSaved",
        "JobFinished",
    ]
