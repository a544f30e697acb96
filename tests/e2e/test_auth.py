"""Freight deployed with tokens, a secret key, an image allow-list and read-only job roots: what
users see of each other, how secrets travel, and the CLI and SDK carrying a token."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from cryptography.fernet import Fernet

from freight import Client
from freight.errors import Unauthorized
from freight_server.shared.config import Settings
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import SERVICES, Cluster, User, running_cluster
from tests.waiting import wait_until

SECRET = "s3cr3t-value-never-shown"
ALLOWED = "freight/busybox:*"


@pytest.fixture(scope="module")
def secured(
    module_cluster_settings: Settings, tokens_file: Path, tokens: dict[str, str], tmp_path_factory
) -> Iterator[Cluster]:
    key = Fernet.generate_key().decode()
    api = {"api_tokens_file": tokens_file, "secret_key": key, "allowed_images": ALLOWED}
    runner = {"secret_key": key, "job_read_only": "true"}

    logs = tmp_path_factory.mktemp("logs")
    overrides = {"api": api, "runner": runner}
    with running_cluster(module_cluster_settings, logs, overrides=overrides) as cluster:
        yield cluster


def test_a_secret_reaches_the_job_and_nothing_else(alice, secured):
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    check = f'test "$(printf %s "$API_KEY" | sha256sum)" = "{digest}  -"'
    job_id = alice.submit(check, secret_env={"API_KEY": SECRET})
    job = alice.wait_for(job_id, "COMPLETE", "FAILED")
    assert job["status"] == "COMPLETE", job  # the container had the value
    assert job["secret_env"] == {"API_KEY": "***"}
    [submitted] = [
        e
        for e in alice.get(f"/jobs/{job_id}/events").json()["events"]
        if e["type"] == "JobSubmitted"
    ]
    assert submitted["data"]["secret_env"] == {"API_KEY": "***"}
    # The log holds it sealed: the API's copy of every event, and every service's log, lack it.
    with sqlite3.connect(secured.settings.home / "api.db") as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM api_events")]
    sealed = json.loads(next(b for b in bodies if '"JobSubmitted"' in b))["data"]["secret_env"]
    assert set(sealed) == {"API_KEY"} and sealed["API_KEY"] != SECRET
    assert not any(SECRET in body for body in bodies)
    for name in SERVICES:
        assert SECRET not in secured.log_of(name), name


def test_users_list_their_own_jobs_and_admins_every_job(alice, bob, root, secured):
    mine, theirs = alice.submit("true"), bob.submit("true")
    alice.wait_for(mine, "COMPLETE")
    bob.wait_for(theirs, "COMPLETE")

    def listed(who: User) -> dict[str, str]:
        page = who.get("/jobs", params={"status": "all", "limit": 1000}).json()
        return {job["job_id"]: job["owner"] for job in page["results"]}

    assert listed(alice).get(mine) == "alice" and theirs not in listed(alice)
    assert listed(bob).get(theirs) == "bob" and mine not in listed(bob)
    assert {mine: "alice", theirs: "bob"}.items() <= listed(root).items()
    assert set(listed(alice).values()) == {"alice"}
    # job_response says whose job ended.
    assert response_for(secured.settings, mine)["owner"] == "alice"


def response_for(settings: Settings, job_id: str) -> dict:
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    seen: dict[str, dict] = {}

    def arrived() -> dict | None:
        while True:
            method, _, body = channel.basic_get(settings.response_queue, auto_ack=True)
            if method is None:
                return seen.get(job_id)
            message = json.loads(body)
            seen[message["job_id"]] = message

    try:
        return wait_until(arrived, timeout=30, what=f"job_response for {job_id}")
    finally:
        connection.close()


def test_an_image_outside_the_allowed_patterns_is_refused(alice):
    response = alice.post("/jobs", json={"command": "true", "image": "python:3.12"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert ALLOWED in response.json()["message"]
    assert alice.post("/jobs", json={"command": "true", "image": TEST_IMAGE}).status_code == 201


READ_ONLY_JOB = """
touch /etc/planted 2>/dev/null && { echo "wrote to the image"; exit 1; }
echo scratch > /tmp/scratch && cat /tmp/scratch
mkdir -p results && sha256sum data/in.txt > results/sum.txt
"""


def test_a_read_only_root_leaves_the_workdir_and_tmp_writable(alice):
    response = alice.post(
        "/jobs",
        data={"command": READ_ONLY_JOB},
        files={"file[]": ("data/in.txt", b"input bytes\n")},
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    job = alice.wait_for(job_id, "COMPLETE", "FAILED")
    assert job["status"] == "COMPLETE", alice.get(f"/jobs/{job_id}/logs").text
    assert alice.get(f"/jobs/{job_id}/logs").text == "scratch\n"
    # The input was put in place, and what the job wrote in its workdir was kept.
    saved = alice.get(f"/jobs/{job_id}/files", params={"path": "/job/results/sum.txt"})
    assert saved.status_code == 200 and saved.text.endswith("  data/in.txt\n")
    listing = alice.get(f"/jobs/{job_id}/files", params={"path": "/job"}).json()
    assert {e["name"] for e in listing["entries"]} == {"data", "results"}


def test_the_sdk_and_cli_carry_the_token(secured, tokens, tmp_path):
    with Client(secured.url, tokens["alice"]) as client:
        job = client.submit("true")
        wait_until(lambda: client.get(job.job_id).finished, what=f"job {job.job_id} to end")
    with Client(secured.url, "frt_wrong") as client, pytest.raises(Unauthorized) as refused:
        client.get(job.job_id)
    assert "FREIGHT_TOKEN" in refused.value.message

    env = {k: v for k, v in os.environ.items() if k != "FREIGHT_TOKEN"}
    env |= {"FREIGHT_URL": secured.url, "FREIGHT_CONFIG": str(tmp_path / "config")}

    def freight(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "freight.cli", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert job.job_id in freight("--json", "ls", "--all", FREIGHT_TOKEN=tokens["alice"]).stdout
    config = tmp_path / "config"
    config.write_text(f"token = {tokens['alice']}\n")
    config.chmod(0o644)
    unsafe = freight("status", job.job_id)
    assert unsafe.returncode != 0 and f"chmod 600 {config}" in unsafe.stderr
    config.chmod(0o600)
    shown = freight("--json", "status", job.job_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["owner"] == "alice"
