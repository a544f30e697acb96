"""A job's output through `GET /jobs/{id}/logs`: followed live, whole, by stream, its tail; shipped
by the runner to the filestore in batches as the job prints."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Cluster
from tests.e2e.test_files import peak_rss_mib

TICKING = "i=1; while [ $i -le 30 ]; do echo line $i; i=$((i+1)); sleep 0.1; done; echo done >&2"


@pytest.fixture(scope="module")
def cluster(shared_cluster: Cluster) -> Cluster:
    """Each check here makes its own jobs: one cluster serves the module."""
    return shared_cluster


EXPECTED = [f"line {i}" for i in range(1, 31)] + ["done"]


def follow_text(cluster, job_id: str, seen: dict[str, Any]) -> None:
    with requests.get(
        f"{cluster.url}/jobs/{job_id}/logs", params={"follow": "true"}, stream=True, timeout=60
    ) as response:
        seen["content_type"] = response.headers["Content-Type"]
        text = b""
        for chunk in response.iter_content(None):
            if not text:
                seen["first_while"] = cluster.job(job_id)["status"]
            text += chunk
        seen["lines"] = text.decode().splitlines()


def follow_events(cluster, job_id: str, seen: dict[str, Any]) -> None:
    with requests.get(
        f"{cluster.url}/jobs/{job_id}/logs",
        params={"follow": "true"},
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=60,
    ) as response:
        seen["content_type"] = response.headers["Content-Type"]
        events = response.text.split("\n\n")
    seen["data"] = [e.removeprefix("data: ") for e in events if e.startswith("data: ")]
    seen["last"] = [e for e in events if e][-1]


def test_following_sees_every_line_once_in_order(cluster):
    job_id = cluster.submit(TICKING)["job_id"]
    text: dict[str, Any] = {}
    events: dict[str, Any] = {}
    followers = [
        threading.Thread(target=follow_text, args=(cluster, job_id, text)),
        threading.Thread(target=follow_events, args=(cluster, job_id, events)),
    ]
    for follower in followers:
        follower.start()
    for follower in followers:
        follower.join(timeout=90)

    assert text["content_type"] == "text/plain; charset=utf-8"
    assert text["lines"] == EXPECTED
    assert text["first_while"] in ("QUEUED", "PENDING", "RUNNING")  # live, not after the end
    assert events["content_type"] == "text/event-stream"
    assert events["data"] == EXPECTED and events["last"] == "event: end\ndata: "
    assert cluster.job(job_id)["status"] == "COMPLETE"


def test_whole_by_stream_and_its_tail(cluster):
    # The engine reads stdout and stderr apart: their order holds between writes some ms apart.
    command = "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three; printf 'four\\nfive'"
    job_id = cluster.submit(command)["job_id"]
    cluster.wait_for_status(job_id, "COMPLETE")

    def logs(**params: str) -> str:
        response = requests.get(f"{cluster.url}/jobs/{job_id}/logs", params=params)
        assert response.status_code == 200, response.text
        return response.text

    assert logs() == "one\ntwo\nthree\nfour\nfive"
    assert logs(stream="stderr") == "two\n"
    assert logs(stream="stdout") == "one\nthree\nfour\nfive"
    assert logs(tail="2") == "four\nfive"
    assert logs(tail="3", stream="stdout") == "three\nfour\nfive"
    assert logs(tail="0") == ""
    assert logs(tail="100") == logs()

    for bad in ({"stream": "both"}, {"tail": "-1"}, {"tail": "x"}, {"follow": "maybe"}):
        response = requests.get(f"{cluster.url}/jobs/{job_id}/logs", params=bad)
        assert response.status_code == 400 and response.json()["error"], bad
    assert requests.get(f"{cluster.url}/jobs/nope/logs").status_code == 404


@pytest.mark.timeout(300)
def test_a_job_printing_100_mb_is_served_in_bounded_memory(cluster):
    # 100 000 lines of 999 characters and a newline.
    job_id = cluster.submit('yes "$(printf %0999d 0)" | head -c 100000000')["job_id"]
    job = cluster.wait_for_status(job_id, "COMPLETE", "FAILED", timeout=240)
    assert job["status"] == "COMPLETE", job

    received = lines = 0
    with requests.get(f"{cluster.url}/jobs/{job_id}/logs", stream=True, timeout=120) as response:
        for chunk in response.iter_content(1024 * 1024):
            received += len(chunk)
            lines += chunk.count(b"\n")
    assert received == 100_000_000 and lines == 100_000
    last = requests.get(f"{cluster.url}/jobs/{job_id}/logs", params={"tail": "1"}).text
    assert last == "0" * 999 + "\n"

    peaks = {name: peak_rss_mib(p.pid) for name, p in cluster.processes.items()}
    assert all(peak < 150 for peak in peaks.values()), peaks


def test_a_job_that_prints_nothing_has_empty_streams(cluster):
    job_id = cluster.submit("true")["job_id"]
    assert cluster.wait_for_status(job_id, "COMPLETE", "FAILED")["status"] == "COMPLETE"

    logs = requests.get(f"{cluster.url}/jobs/{job_id}/logs", timeout=30)
    files = {
        path: requests.get(
            f"{cluster.url}/files", params={"job_id": job_id, "path": path}, timeout=30
        )
        for path in ("/.freight/stdout", "/.freight/stderr")
    }

    assert logs.status_code == 200 and logs.content == b""
    assert {path: (r.status_code, r.content) for path, r in files.items()} == {
        "/.freight/stdout": (200, b""),
        "/.freight/stderr": (200, b""),
    }
