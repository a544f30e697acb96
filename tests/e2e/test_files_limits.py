"""What happens at the edges of files: a client that goes away mid-upload, a request over
FREIGHT_MAX_UPLOAD_BYTES, an input that cannot be had in time, files past their retention."""

from __future__ import annotations

import json
import os
import signal
import socket
from http.client import HTTPResponse
from pathlib import Path

import requests

from freight_server.shared.filestore_client import BATCH
from freight_server.shared.rpc import CHUNK_BYTES
from tests.e2e.conftest import _answers
from tests.waiting import wait_until

MIB = 1024 * 1024


def stored_blobs(cluster) -> list[Path]:
    """What the filestore keeps on disk (its directory, looked at only by the test)."""
    root = cluster.settings.home / "blobs"
    return sorted(
        [*(root / "sha256").glob("*/*"), *(root / "packs").glob("*"), *(root / "tmp").glob("*")]
    )


def all_jobs(cluster) -> int:
    return requests.get(f"{cluster.url}/jobs", params={"status": "all"}).json()["count"]


def test_a_client_that_goes_away_mid_upload_leaves_nothing(cluster):
    boundary = "cut-short"
    first = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="command"\r\n\r\ntrue\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file[]"; filename="one.bin"'
        "\r\n\r\n"
    ).encode() + os.urandom(2 * MIB)
    second = (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file[]"; filename="two.bin"'
        "\r\n\r\n"
    ).encode() + os.urandom((BATCH + 1) * CHUNK_BYTES)  # past the first batch: under way
    host, port = cluster.settings.api_bind.split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: freight\r\n"
            b"Content-Type: multipart/form-data; boundary=" + boundary.encode() + b"\r\n"
            b"Content-Length: " + str(100 * MIB).encode() + b"\r\n\r\n" + first + second
        )
        # The first file is complete and stored, the second partly sent: now the client vanishes.
        wait_until(lambda: len(stored_blobs(cluster)) >= 2, what="both uploads to be under way")

    wait_until(lambda: stored_blobs(cluster) == [], what="the filestore to let go of both")
    assert all_jobs(cluster) == 0


def test_a_request_over_the_limit_is_refused_and_leaves_nothing(cluster):
    cluster.kill("api", signal.SIGTERM)  # gunicorn's workers go with it
    cluster.start("api", max_upload_bytes=MIB)
    wait_until(lambda: _answers(cluster.url), what="the API to answer again")
    form = requests.Request(
        "POST", cluster.url, data={"command": "true"}, files=[("file[]", ("a", b"x" * 2 * MIB))]
    ).prepare()
    pieces = [form.body[i : i + 65536] for i in range(0, len(form.body), 65536)]

    declared = send(cluster, form.headers["Content-Type"], pieces, chunked=False)
    assert declared.status == 413

    refusal = json.loads(declared.read())
    assert refusal["error"] == "too_large" and "bytes" in refusal["message"]
    # A form sent chunked, its length unknown (a file from a pipe), is counted as it comes.
    streamed = send(cluster, form.headers["Content-Type"], pieces, chunked=True)
    assert streamed.status == 413 and json.loads(streamed.read())["error"] == "too_large"
    assert stored_blobs(cluster) == [] and all_jobs(cluster) == 0


def send(cluster, content_type: str, pieces: list[bytes], chunked: bool) -> HTTPResponse:
    """POST a body, then read the answer even if the API answered before reading it all (as
    it does past the limit, closing the connection on the rest)."""
    framing = (
        b"Transfer-Encoding: chunked"
        if chunked
        else b"Content-Length: " + str(sum(map(len, pieces))).encode()
    )
    host, port = cluster.settings.api_bind.split(":")
    connection = socket.create_connection((host, int(port)))
    try:
        connection.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: freight\r\nContent-Type: "
            + content_type.encode()
            + b"\r\n"
            + framing
            + b"\r\n\r\n"
        )
        for piece in pieces:
            connection.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            connection.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the API stopped reading: its answer is waiting all the same
    response = HTTPResponse(connection)
    response.begin()
    return response


def test_an_input_that_cannot_be_had_in_time_fails_the_job(cluster):
    cluster.kill("runner")
    created = requests.post(
        f"{cluster.url}/jobs", data={"command": "true"}, files=[("file[]", ("in.txt", b"x"))]
    )
    assert created.status_code == 201, created.text
    cluster.kill("filestore")  # the input is stored, but nothing can serve it now
    cluster.start("runner", input_deadline=1)

    job = cluster.wait_for_status(created.json()["job_id"], "FAILED", timeout=60)
    assert "input /job/in.txt could not be had within 1s" in job["reason"]
    assert "FREIGHT_INPUT_DEADLINE" in job["reason"]


def test_files_go_once_their_retention_has_passed(cluster):
    cluster.kill("filestore")
    cluster.start("filestore", file_retention=1, file_gc_interval=0.2)
    created = requests.post(
        f"{cluster.url}/jobs",
        data={"command": "echo made > out.txt"},
        files=[("file[]", ("in.txt", b"given"))],
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]
    assert cluster.wait_for_status(job_id, "COMPLETE", "FAILED")["status"] == "COMPLETE"

    def fetch(path: str) -> requests.Response:
        return requests.get(f"{cluster.url}/files", params={"job_id": job_id, "path": path})

    # Listed still (the history is kept), but the bytes are gone a second after the end.
    wait_until(lambda: fetch("/job/out.txt").status_code == 410, what="the output to be gone")
    gone = fetch("/job/out.txt").json()
    assert gone["error"] == "gone" and "FREIGHT_FILE_RETENTION" in gone["message"]
    assert fetch("/job/in.txt").status_code == 410
    wait_until(lambda: stored_blobs(cluster) == [], what="every blob to go")


def test_outputs_past_the_limit_are_listed_as_skipped(cluster):
    cluster.kill("runner", signal.SIGTERM)
    cluster.start("runner", max_output_bytes=MIB)
    job_id = cluster.submit("head -c 2097152 /dev/zero > big.bin; echo small > small.txt")["job_id"]
    assert cluster.wait_for_status(job_id, "COMPLETE", "FAILED")["status"] == "COMPLETE"

    def fetch(path: str) -> requests.Response:
        return requests.get(f"{cluster.url}/jobs/{job_id}/files", params={"path": path})

    assert fetch("/job/small.txt").content == b"small\n"
    skipped = fetch("/job/big.bin")
    assert skipped.status_code == 404 and "FREIGHT_MAX_OUTPUT_BYTES" in skipped.json()["message"]
    saved = next(
        e["data"]
        for e in requests.get(f"{cluster.url}/jobs/{job_id}/events").json()["events"]
        if e["type"] == "JobOutputsSaved"
    )
    assert [(s["path"], s["size"]) for s in saved["skipped"]] == [("/job/big.bin", 2 * MIB)]
