"""A corpus of hostile and broken requests against the real server (gunicorn): each gets a clear
4xx, nothing is accepted by mistake, and the API keeps serving everyone else."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.conftest import Cluster, running_cluster
from tests.waiting import wait_until

CLIENT_TIMEOUT = 2


@pytest.fixture
def api(cluster_settings, tmp_path) -> Iterator[Cluster]:
    def start(cluster: Cluster) -> None:
        cluster.start("api", api_client_timeout=CLIENT_TIMEOUT)

    with running_cluster(cluster_settings, tmp_path / "logs", start=start) as cluster:
        yield cluster


def raw_request(cluster: Cluster, data: bytes, read_timeout: float = 10) -> bytes:
    host, port = cluster.settings.api_bind.split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def still_serving(cluster: Cluster) -> None:
    response = requests.post(f"{cluster.url}/jobs", json={"command": "true"}, timeout=5)
    assert response.status_code == 201


def assert_json_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "message"}


def test_the_corpus(api):
    url = f"{api.url}/jobs"
    multipart = {"Content-Type": "multipart/form-data; boundary=B"}
    cases = {
        "malformed multipart": requests.post(url, data=b"--B\r\nnonsense", headers=multipart),
        "multipart without a boundary": requests.post(
            url, data=b"x", headers={"Content-Type": "multipart/form-data"}
        ),
        "invalid UTF-8 in a command": requests.post(
            url,
            data=b'--B\r\nContent-Disposition: form-data; name="command"\r\n\r\n'
            b"\xff\xfe\r\n--B--\r\n",
            headers=multipart,
        ),
        "invalid UTF-8 in JSON": requests.post(
            url, data=b'{"command": "\xff"}', headers={"Content-Type": "application/json"}
        ),
        "a field too large": requests.post(url, json={"command": "x" * 200_000}),
        "JSON nested too deep": requests.post(
            url, data="[" * 100_000, headers={"Content-Type": "application/json"}
        ),
        "a job id that is not a uuid": requests.get(f"{api.url}/jobs/not-a-uuid%00%ff"),
        "a path that climbs": requests.get(f"{api.url}/jobs/..%2F..%2Fetc%2Fpasswd"),
    }
    for name, response in cases.items():
        assert 400 <= response.status_code < 500, f"{name}: {response.status_code}"
        assert set(response.json()) == {"error", "message"}, name
    assert_json_error(
        requests.post(
            url,
            data=json.dumps({"command": "x" * (5 << 20)}),
            headers={"Content-Type": "application/json"},
        ),
        413,
    )
    still_serving(api)
    # Only the well-formed job was accepted.
    wait_until(lambda: requests.get(url, params={"status": "all"}).json()["count"] == 1)


def test_truncated_body(api):
    body = b'{"command": "echo this body never ends'
    response = raw_request(
        api,
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n" + body,
    )
    assert 400 <= status_of(response) < 500
    still_serving(api)


def test_oversized_headers(api):
    response = raw_request(
        api, b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 70_000 + b"\r\n\r\n"
    )
    assert 400 <= status_of(response) < 500
    still_serving(api)


def test_a_slow_client_does_not_hold_up_the_others(api):
    host, port = api.settings.api_bind.split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(
        b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    try:
        started = time.monotonic()
        still_serving(api)
        assert time.monotonic() - started < 2
    finally:
        slow.close()
