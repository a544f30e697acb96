"""Files through Freight against a plain local copy of the same bytes, in the same run.

    python -m bench.files [--size-mib 256]

Starts its own filestore, API, scheduler and runner (a fresh namespace and FREIGHT_HOME in a
temporary directory) on the RabbitMQ at FREIGHT_AMQP_URL and the local Docker engine, then:

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
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import requests

MIB = 1024 * 1024
SERVICES = ("filestore", "api", "scheduler", "runner")
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
        with Services(root) as services:
            measured = services.measure(source, digest)
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


class Services:
    """Freight's four services as separate processes, each on this run's own namespace."""

    def __init__(self, root: Path):
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.amqp_url = os.environ.get("FREIGHT_AMQP_URL", "amqp://guest:guest@localhost:5672/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FREIGHT_AMQP_URL": self.amqp_url,
            "FREIGHT_HOME": str(root / "home"),
            "FREIGHT_NAMESPACE": self.namespace,
            "FREIGHT_RESPONSE_EXCHANGE": f"{self.namespace}.job_response",
            "FREIGHT_RESPONSE_QUEUE": f"{self.namespace}.job_response",
            "FREIGHT_API_BIND": f"127.0.0.1:{self.port}",
            "FREIGHT_DEFAULT_IMAGE": os.environ.get("FREIGHT_TEST_IMAGE", "freight/busybox:local"),
            "FREIGHT_RUNNER_ID": f"{self.namespace}-runner",
            "FREIGHT_HEARTBEAT_INTERVAL": "0.5",
            "FREIGHT_LOG_LEVEL": "WARNING",
        }
        self.logs = root / "logs"
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Services:
        self.logs.mkdir()
        for service in SERVICES:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "freight.cli", "serve", service],
                    env=self.env,
                    stdout=open(self.logs / f"{service}.log", "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
            )
        wait_for(self._answers, 60, "the API to answer")
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self._delete_topology()

    def measure(self, source: Path, digest: str) -> dict[str, float]:
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
        response = wait_for(lambda: self._submit(body, boundary), 30, "a submission")
        upload = time.monotonic() - started
        job_id = response.json()["job_id"]
        job = wait_for(lambda: self._ended(job_id), 300, f"job {job_id} to end")
        if job["status"] != "COMPLETE":
            raise RuntimeError(f"the benchmark's job failed: {job['reason']}")
        placed = _seconds_between(self._events(job_id), "JobAssigned", "JobStarted")

        started = time.monotonic()
        hasher, received = hashlib.sha256(), 0
        with requests.get(
            f"{self.url}/jobs/{job_id}/files", params={"path": "/job/data.bin"}, stream=True
        ) as download:
            download.raise_for_status()
            for chunk in download.iter_content(MIB):
                hasher.update(chunk)
                received += len(chunk)
        downloaded = time.monotonic() - started
        if received != size or hasher.hexdigest() != digest:
            raise RuntimeError("the download is not the bytes uploaded")
        return {"upload": upload, "into_job": placed, "download": downloaded}

    def _submit(self, body: _Body, boundary: str) -> requests.Response | None:
        body.rewind()
        response = requests.post(
            f"{self.url}/jobs",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=600,
        )
        if response.status_code == 503:
            return None
        response.raise_for_status()
        return response

    def _ended(self, job_id: str) -> dict[str, Any] | None:
        job: dict[str, Any] = requests.get(f"{self.url}/jobs/{job_id}").json()
        return job if job["status"] in ("COMPLETE", "FAILED") else None

    def _events(self, job_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = requests.get(f"{self.url}/jobs/{job_id}/events").json()[
            "events"
        ]
        return events

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def _delete_topology(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        except pika.exceptions.AMQPError:
            return
        channel = connection.channel()
        channel.queue_delete(f"{self.namespace}.events")
        channel.queue_delete(f"{self.namespace}.job_response")
        channel.exchange_delete(f"{self.namespace}.job_response")
        connection.close()


class _Body:
    """A multipart body read from disk as it is sent, with its length (so not chunked)."""

    def __init__(self, head: bytes, source: Path, tail: bytes):
        self._head, self._source, self._tail = head, source, tail
        self._length = len(head) + source.stat().st_size + len(tail)
        self._pieces: Iterator[bytes] = iter(())
        self._pending = b""

    def rewind(self) -> None:
        self._pieces, self._pending = self._read(), b""

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
            self._pending = next(self._pieces, b"")
            if not self._pending:
                return b""
        size = len(self._pending) if size < 0 else size
        out, self._pending = self._pending[:size], self._pending[size:]
        return out


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


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
