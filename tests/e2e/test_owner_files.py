"""The original document's `GET /files?path=/abs`, without a job: a caller's jobs share one file
system made of what they saved, the newest version of each path winning, and no other owner's
files ever showing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from freight_server.shared.config import Settings
from tests.e2e.conftest import Cluster, User, running_cluster
from tests.waiting import wait_until

JOB_HEADER = "X-Freight-Job-Id"


@pytest.fixture(scope="module")
def secured(
    module_cluster_settings: Settings,
    tokens_file: Path,
    tokens: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("logs")
    overrides = {"api": {"api_tokens_file": tokens_file}}
    with running_cluster(module_cluster_settings, logs, overrides=overrides) as cluster:
        yield cluster


def read(user: User, path: str, **params: Any) -> requests.Response:
    return user.get("/files", params={"path": path, **params}, timeout=60)


def listed(user: User, path: str) -> dict[str, dict[str, Any]]:
    response = read(user, path)
    assert response.status_code == 200, response.text
    entries = response.json()["entries"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), names  # each path once, whichever jobs wrote it
    return {e["name"]: e for e in entries}


def test_the_newest_version_wins_and_no_other_owner_sees_it(alice, bob, root):
    first = alice.submit("echo one > /tmp/out.txt && echo a > /tmp/a.txt")
    assert alice.wait_for(first, "COMPLETE", "FAILED")["status"] == "COMPLETE"
    second = alice.submit("echo two > /tmp/out.txt")
    assert alice.wait_for(second, "COMPLETE", "FAILED")["status"] == "COMPLETE"

    newest = read(alice, "/tmp/out.txt")
    assert newest.status_code == 200, newest.text
    assert newest.content == b"two\n" and newest.headers[JOB_HEADER] == second
    assert newest.headers["Content-Length"] == "4"
    assert "out.txt" in newest.headers["Content-Disposition"]
    entries = listed(alice, "/tmp")
    assert entries["out.txt"]["job_id"] == second and entries["out.txt"]["size"] == 4
    assert entries["a.txt"]["job_id"] == first and entries["a.txt"]["type"] == "file"
    assert read(alice, "/tmp/out.txt", job_id=first).content == b"one\n"  # as it was

    for stranger in (bob, root):  # an admin too resolves over their own jobs by default
        refused = read(stranger, "/tmp/out.txt")
        assert refused.status_code == 404 and refused.json()["error"] == "not_found", stranger
        assert "out.txt" not in listed_or_none(stranger, "/tmp")
    assert read(root, "/tmp/out.txt", owner="alice").content == b"two\n"
    assert read(bob, "/tmp/out.txt", owner="alice").status_code == 403


def listed_or_none(user: User, path: str) -> dict[str, Any]:
    response = read(user, path)
    return {e["name"]: e for e in response.json()["entries"]} if response.ok else {}


def test_an_uploaded_file_is_found_without_its_job(alice, bob):
    name = f"/data/{uuid.uuid4().hex}.csv"
    response = alice.post(
        "/jobs", data={"command": "true"}, files=[("file[]", (name, b"a,b\n1,2\n"))]
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]

    found = wait_until(
        lambda: (r := read(alice, name)).status_code == 200 and r,
        what=f"{name} to be found by path alone",
    )
    assert found.content == b"a,b\n1,2\n" and found.headers[JOB_HEADER] == job_id
    assert found.headers["Content-Type"] == "text/csv"
    assert listed(alice, "/data")[name.rsplit("/", 1)[1]]["job_id"] == job_id
    assert read(bob, name).status_code == 404


def test_bad_paths_and_paths_no_job_has(alice):
    relative = read(alice, "tmp/out.txt")
    assert relative.status_code == 400 and relative.json()["error"] == "invalid_request"
    assert read(alice, "/tmp/../etc").status_code == 400
    missing = read(alice, f"/nowhere/{uuid.uuid4().hex}")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
