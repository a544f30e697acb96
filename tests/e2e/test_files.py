"""Files as users move them: `file[]` parts in, the job's files out through `/files`, all of it
through the filestore over RabbitMQ."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import Cluster
from tests.waiting import wait_until

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cluster(shared_cluster: Cluster) -> Cluster:
    """Each check here makes its own jobs: one cluster serves the module."""
    return shared_cluster


# -- helpers ---------------------------------------------------------------------------------------


class StreamedBody:
    """A request body read as it is sent; its length known, so it goes with Content-Length."""

    def __init__(self, pieces: Iterator[bytes], length: int):
        self._pieces = pieces
        self._pending = b""
        self._length = length

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            self._pending = next(self._pieces, b"")
            if not self._pending:
                return b""
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


def streamed_form(
    fields: dict[str, str], files: list[tuple[str, Path]]
) -> tuple[dict, StreamedBody]:
    """A multipart body generated as it is sent (never whole in memory)."""
    boundary = uuid.uuid4().hex
    pieces: list[bytes | Path] = []
    for name, value in fields.items():
        pieces.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for filename, source in files:
        pieces.append(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file[]"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        pieces += [source, b"\r\n"]
    pieces.append(f"--{boundary}--\r\n".encode())
    length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in pieces)

    def body() -> Iterator[bytes]:
        for piece in pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            with piece.open("rb") as f:
                while chunk := f.read(MIB):
                    yield chunk

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return headers, StreamedBody(body(), length)


def get_file(cluster, job_id: str, path: str, **params: Any) -> requests.Response:
    return requests.get(
        f"{cluster.url}/files", params={"job_id": job_id, "path": path, **params}, timeout=60
    )


def listing(cluster, job_id: str, path: str) -> dict[str, dict[str, Any]]:
    response = requests.get(f"{cluster.url}/jobs/{job_id}/files", params={"path": path})
    assert response.status_code == 200, response.text
    assert response.json()["path"] == path
    return {e["name"]: e for e in response.json()["entries"]}


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of a process and, for gunicorn, its workers."""
    total = 0.0
    for each in [pid, *children_of(pid)]:
        status = Path(f"/proc/{each}/status").read_text()
        kib = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmHWM:")
        total = max(total, kib / 1024)
    return total


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


# -- the tests -------------------------------------------------------------------------------------


def test_the_documents_example_as_written(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("file.png").write_text("not really a png\n")

    response = requests.post(
        f"{cluster.url}/submission",
        data={"command": "ls -al /tmp"},
        files=[("file[]", ("/tmp/file.png", open("file.png"), "image/png"))],  # noqa: SIM115
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    assert set(response.json()) == {"job_id", "command", "status"}

    assert cluster.wait_for_status(job_id, "COMPLETE", "FAILED")["status"] == "COMPLETE"
    stdout = get_file(cluster, job_id, "/.freight/stdout")
    assert stdout.status_code == 200 and "file.png" in stdout.text

    png = get_file(cluster, job_id, "/tmp/file.png")
    assert png.status_code == 200 and png.content == b"not really a png\n"
    assert png.headers["Content-Type"] == "image/png"
    assert png.headers["Content-Length"] == str(len(png.content))
    assert "file.png" in png.headers["Content-Disposition"]
    entry = listing(cluster, job_id, "/tmp")["file.png"]
    assert entry["type"] == "file" and entry["size"] == 17 and entry["path"] == "/tmp/file.png"


@pytest.mark.timeout(300)
def test_200_mib_in_and_out_byte_identical_in_bounded_memory(cluster, tmp_path):
    size = 200 * MIB
    source = tmp_path / "big.bin"
    with source.open("wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    headers, body = streamed_form(
        {
            "command": "sha256sum big.bin > in.sha256 && "
            f"head -c {size} /dev/urandom > out.bin && sha256sum out.bin > out.sha256"
        },
        [("big.bin", source)],
    )
    response = requests.post(f"{cluster.url}/jobs", headers=headers, data=body, timeout=120)
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    job = cluster.wait_for_status(job_id, "COMPLETE", "FAILED", timeout=180)
    assert job["status"] == "COMPLETE", job

    inside = get_file(cluster, job_id, "/job/in.sha256").text.split()[0]
    assert inside == sha256_of(source)

    downloaded = hashlib.sha256()
    received = 0
    with requests.get(
        f"{cluster.url}/jobs/{job_id}/files", params={"path": "/job/out.bin"}, stream=True
    ) as out:
        assert out.status_code == 200 and out.headers["Content-Length"] == str(size)
        for chunk in out.iter_content(MIB):
            downloaded.update(chunk)
            received += len(chunk)
    assert received == size
    assert downloaded.hexdigest() == get_file(cluster, job_id, "/job/out.sha256").text.split()[0]

    # Bounded whatever the file's size: a service's own ≈ 90 MiB, a window of the transfer
    # (16 MiB) and the copies of a batch on its way, far from the 200 MiB a whole copy would add.
    peaks = {name: peak_rss_mib(p.pid) for name, p in cluster.processes.items()}
    assert all(peak < 192 for peak in peaks.values()), peaks


def test_names_put_files_where_they_say_and_outputs_show_what_changed(cluster):
    response = requests.post(
        f"{cluster.url}/jobs",
        data={
            "command": "mkdir -p out/a/b empty"
            " && cat data/in.txt /opt/deep/x.txt > out/a/b/both.txt && rm gone.txt && echo done"
        },
        files=[
            ("file[]", ("data/in.txt", b"relative\n")),
            ("file[]", ("/opt/deep/x.txt", b"absolute\n")),
            ("file", ("gone.txt", b"to be deleted\n")),
        ],
    )
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    assert cluster.wait_for_status(job_id, "COMPLETE", "FAILED")["status"] == "COMPLETE"

    both = get_file(cluster, job_id, "/job/out/a/b/both.txt")
    assert both.status_code == 200 and both.content == b"relative\nabsolute\n"
    assert get_file(cluster, job_id, "/job/data/in.txt").content == b"relative\n"
    assert get_file(cluster, job_id, "/opt/deep/x.txt").content == b"absolute\n"
    assert listing(cluster, job_id, "/job/out/a")["b"]["type"] == "dir"
    assert set(listing(cluster, job_id, "/job")) >= {"data", "out", "empty"}
    assert listing(cluster, job_id, "/job")["empty"]["type"] == "dir"
    assert listing(cluster, job_id, "/job/empty") == {}
    assert "gone.txt" not in listing(cluster, job_id, "/job")
    gone = get_file(cluster, job_id, "/job/gone.txt")
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert get_file(cluster, job_id, "/.freight/stdout").text == "done\n"
    assert set(listing(cluster, job_id, "/.freight")) == {"stdout", "stderr"}


def test_a_failed_job_keeps_what_it_wrote(cluster):
    job_id = cluster.submit("echo partial > result.txt; echo oops >&2; exit 3")["job_id"]
    assert cluster.wait_for_status(job_id, "FAILED")["reason"] == "exit code 3"
    assert get_file(cluster, job_id, "/job/result.txt").content == b"partial\n"
    assert get_file(cluster, job_id, "/.freight/stderr").content == b"oops\n"


def test_a_running_job_is_read_live(cluster):
    job_id = cluster.submit("echo hello > live.txt; mkdir sub; sleep 300")["job_id"]
    cluster.wait_for_status(job_id, "RUNNING")
    entries = wait_until(
        lambda: (e := listing(cluster, job_id, "/job")) and "live.txt" in e and e,
        what="live.txt to appear",
    )
    assert entries["live.txt"]["type"] == "file" and entries["sub"]["type"] == "dir"
    assert get_file(cluster, job_id, "/job/live.txt").content == b"hello\n"
    assert get_file(cluster, job_id, "/job/nothing").status_code == 404
    assert get_file(cluster, job_id, "/etc/passwd").text.startswith("root:")  # the image's

    assert requests.delete(f"{cluster.url}/jobs/{job_id}").status_code == 202
    cluster.wait_for_status(job_id, "FAILED")
    # Saved when it ended, even though it was cancelled.
    assert get_file(cluster, job_id, "/job/live.txt").content == b"hello\n"


def test_bad_names_and_paths_are_refused_naming_the_culprit(cluster):
    jobs_before = job_count(cluster)
    cases = {
        "": "empty name",
        "a\x00b": "NUL",
        "../etc/passwd": "'..'",
        "x/../../y": "'..'",
        "n" * 4097: "4096 bytes",
        "dir/": "directory",
    }
    for name, words in cases.items():
        response = post_raw_file(cluster, name)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"] == "invalid_request"
        assert "file[] #1" in response.json()["message"] and words in response.json()["message"]

    twice = requests.post(
        f"{cluster.url}/jobs",
        data={"command": "true"},
        files=[("file[]", ("a.txt", b"1")), ("file[]", ("/job/a.txt", b"2"))],
    )
    assert twice.status_code == 400 and "file[] #2" in twice.json()["message"]
    assert "/job/a.txt" in twice.json()["message"]
    assert job_count(cluster) == jobs_before  # none of them made a job

    job_id = cluster.submit("true")["job_id"]
    cluster.wait_for_status(job_id, "COMPLETE")
    # Without job_id the path is the caller's across their jobs (tests/e2e/test_owner_files.py).
    no_job = requests.get(f"{cluster.url}/files", params={"path": "job"})
    assert no_job.status_code == 400 and "absolute" in no_job.json()["message"]
    for path, words in {"job/x": "absolute", "/job/../etc": "'..'", "/a\x00b": "NUL"}.items():
        response = get_file(cluster, job_id, path)
        assert response.status_code == 400 and words in response.json()["message"], path
    assert get_file(cluster, "no-such-job", "/job").status_code == 404
    assert get_file(cluster, job_id, "/nowhere").status_code == 404


def job_count(cluster) -> int:
    return int(requests.get(f"{cluster.url}/jobs", params={"status": "all"}).json()["count"])


def post_raw_file(cluster, filename: str) -> requests.Response:
    """A file part whose filename goes out byte for byte (requests would escape a NUL)."""
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="command"\r\n\r\ntrue\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file[]"; filename="{filename}"'
        f"\r\n\r\nbytes\r\n--{boundary}--\r\n"
    ).encode()
    return requests.post(
        f"{cluster.url}/jobs",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
