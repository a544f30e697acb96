"""Files through Freight against a plain local copy of the same bytes, in the same run.

    python -m bench.files [--size-mib 256]

Starts its own filestore, API, scheduler and runner (bench/cluster.py: a fresh namespace and
FREIGHT_HOME in a temporary directory) on the RabbitMQ at FREIGHT_AMQP_URL and the local Docker
engine, then:

- local copy: the file copied on this disk and fsynced, as the filestore stores it;
- upload: `POST /jobs` with the file as a `file[]` part, until the 201 (API → filestore);
- into the job: the job's JobAssigned to JobStarted (filestore → runner → container);
- download: `GET /jobs/{id}/files` of that file once the job ended (filestore → API → client).

Writes bench/results/files-<time>.json and prints a summary; ratios are Freight's MB/s over the
local copy's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bench.cluster import Cluster, wait_for

MIB = 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.files", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    args = parser.parse_args(argv)
    size = args.size_mib * MIB
    with tempfile.TemporaryDirectory(prefix="freight-bench-") as scratch:
        root = Path(scratch)
        source = write_random(root / "data.bin", size)
        digest = sha256_of(source)
        local = time_local_copy(source, root / "copy.bin")
        with Cluster(root) as cluster:
            measured = measure(cluster, source, digest)
    results = {
        "benchmark": "files",
        "at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "size_bytes": size,
        "local_copy_mb_s": mb_per_s(size, local),
        **{f"{name}_mb_s": mb_per_s(size, seconds) for name, seconds in measured.items()},
    }
    for name in measured:
        results[f"{name}_ratio"] = round(results[f"{name}_mb_s"] / results["local_copy_mb_s"], 3)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"files-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(summary(results))
    print(f"written to {out}")
    return 0


def measure(cluster: Cluster, source: Path, digest: str) -> dict[str, float]:
    """Seconds to upload `source` with a job, to place it in the job's container, to download it."""
    size = source.stat().st_size
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="command"\r\n\r\ntrue\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file[]"; filename="data.bin"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = _Body(head, source, tail)
    # The filestore may still be starting: a first submission can be refused with a 503.
    started = time.monotonic()
    response = wait_for(lambda: _submit(cluster.url, body, boundary), 30, "a submission")
    upload = time.monotonic() - started
    job_id = response.json()["job_id"]
    job = wait_for(lambda: _ended(cluster.url, job_id), 300, f"job {job_id} to end")
    if job["status"] != "COMPLETE":
        raise RuntimeError(f"the benchmark's job failed: {job['reason']}")
    placed = _seconds_between(_events(cluster.url, job_id), "JobAssigned", "JobStarted")

    started = time.monotonic()
    hasher, received = hashlib.sha256(), 0
    with requests.get(
        f"{cluster.url}/jobs/{job_id}/files", params={"path": "/job/data.bin"}, stream=True
    ) as download:
        download.raise_for_status()
        for chunk in download.iter_content(MIB):
            hasher.update(chunk)
            received += len(chunk)
    downloaded = time.monotonic() - started
    if received != size or hasher.hexdigest() != digest:
        raise RuntimeError("the download is not the bytes uploaded")
    return {"upload": upload, "into_job": placed, "download": downloaded}


def _submit(url: str, body: _Body, boundary: str) -> requests.Response | None:
    body.rewind()
    response = requests.post(
        f"{url}/jobs",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=600,
    )
    if response.status_code == 503:
        return None
    response.raise_for_status()
    return response


def _ended(url: str, job_id: str) -> dict[str, Any] | None:
    job: dict[str, Any] = requests.get(f"{url}/jobs/{job_id}").json()
    return job if job["status"] in ("COMPLETE", "FAILED") else None


def _events(url: str, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = requests.get(f"{url}/jobs/{job_id}/events").json()["events"]
    return events


class _Body:
    """A multipart body read from disk as it is sent, with its length (so not chunked).

    The HTTP client reads it 16 KiB at a time: each read is a slice of the piece at hand, not
    a copy of the rest of it (which cost this process ~0.1 s of CPU per 64 MiB, taken from the
    services on a small machine)."""

    def __init__(self, head: bytes, source: Path, tail: bytes):
        self._head, self._source, self._tail = head, source, tail
        self._length = len(head) + source.stat().st_size + len(tail)
        self._pieces: Iterator[bytes] = iter(())
        self._pending = memoryview(b"")

    def rewind(self) -> None:
        self._pieces, self._pending = self._read(), memoryview(b"")

    def _read(self) -> Iterator[bytes]:
        yield self._head
        with self._source.open("rb") as f:
            while chunk := f.read(MIB):
                yield chunk
        yield self._tail

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            self._pending = memoryview(next(self._pieces, b""))
            if not self._pending:
                return b""
        size = len(self._pending) if size < 0 else size
        out, self._pending = self._pending[:size], self._pending[size:]
        return out.tobytes()


def write_random(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))
    return path


def time_local_copy(source: Path, target: Path) -> float:
    started = time.monotonic()
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, MIB)
        dst.flush()
        os.fsync(dst.fileno())
    return time.monotonic() - started


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            hasher.update(chunk)
    return hasher.hexdigest()


def _seconds_between(events: list[dict[str, Any]], first: str, then: str) -> float:
    at = {e["type"]: datetime.fromisoformat(e["occurred_at"]) for e in events}
    return (at[then] - at[first]).total_seconds()


def mb_per_s(size: int, seconds: float) -> float:
    return round(size / 1e6 / max(seconds, 1e-9), 1)


def summary(results: dict[str, Any]) -> str:
    lines = [f"{results['size_bytes'] // MIB} MiB, {results['machine']['cpus']} CPUs"]
    lines.append(f"  local copy   {results['local_copy_mb_s']:8.1f} MB/s")
    for name in ("upload", "into_job", "download"):
        lines.append(
            f"  {name:<12} {results[f'{name}_mb_s']:8.1f} MB/s"
            f"  ({results[f'{name}_ratio']:.2f} of the local copy)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
