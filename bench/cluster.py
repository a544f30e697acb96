"""What every benchmark shares: Freight's services as processes, `job_response`, the raw baseline.

The services run as processes on a fresh namespace and FREIGHT_HOME per run; a scenario picks
which ones: the API scenario starts the API alone so that jobs only queue.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pika
import requests

IMAGE = os.environ.get("FREIGHT_TEST_IMAGE", "freight/busybox:local")
ALL_SERVICES = ("filestore", "api", "scheduler", "runner")


class Cluster:
    """Some of Freight's services as separate processes, on this run's own namespace."""

    def __init__(
        self,
        root: Path,
        services: tuple[str, ...] = ALL_SERVICES,
        ready_timeout: float = 60,
        **env: str | int | float,
    ):
        self.ready_timeout = ready_timeout  # a projection rebuilding a long log takes longer
        self.services = services
        self.namespace = f"bench-{uuid.uuid4().hex[:8]}"
        self.amqp_url = os.environ.get("FREIGHT_AMQP_URL", "amqp://guest:guest@localhost:5672/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = root / self.namespace
        self.env = {
            **os.environ,
            "FREIGHT_AMQP_URL": self.amqp_url,
            "FREIGHT_HOME": str(self.root / "home"),
            "FREIGHT_NAMESPACE": self.namespace,
            "FREIGHT_RESPONSE_EXCHANGE": f"{self.namespace}.job_response",
            "FREIGHT_RESPONSE_QUEUE": f"{self.namespace}.job_response",
            "FREIGHT_API_BIND": f"127.0.0.1:{self.port}",
            "FREIGHT_DEFAULT_IMAGE": IMAGE,
            "FREIGHT_RUNNER_ID": f"{self.namespace}-runner",
            "FREIGHT_HEARTBEAT_INTERVAL": "0.5",
            "FREIGHT_LOG_LEVEL": "WARNING",
            **{f"FREIGHT_{k.upper()}": str(v) for k, v in env.items()},
        }
        self.logs = self.root / "logs"
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Cluster:
        self.logs.mkdir(parents=True)
        for service in self.services:
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "freight.cli", "serve", service],
                    env=self.env,
                    stdout=open(self.logs / f"{service}.log", "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            wait_for(self._ready, self.ready_timeout, "the API to be ready")
        except BaseException:
            self.__exit__()  # no service outlives a run that failed to start
            raise
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

    def submit(self, session: requests.Session | None = None, **fields: Any) -> str:
        """A job's id once the API answered 201 (a 503 while it starts is tried again)."""
        post = (session or requests).post
        body = {"command": "true", **fields}
        while True:
            response = post(f"{self.url}/jobs", json=body, timeout=60)
            if response.status_code != 503:
                break
            time.sleep(0.05)
        response.raise_for_status()
        return str(response.json()["job_id"])

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = requests.get(f"{self.url}/jobs/{job_id}", timeout=30).json()
        return job

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=1).ok
        except requests.ConnectionError:
            return False

    def _delete_topology(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        except pika.exceptions.AMQPError:
            return
        channel = connection.channel()
        channel.queue_delete(f"{self.namespace}.events")
        channel.queue_delete(f"{self.namespace}.heartbeats")
        channel.queue_delete(f"{self.namespace}.job_response")
        channel.queue_delete(f"{self.namespace}.bench-responses")
        channel.exchange_delete(f"{self.namespace}.job_response")
        connection.close()


class Responses:
    """A subscriber of `job_response`: when (monotonic) each job's response arrived here.

    Its own connection on its own thread, consuming (not polling) so that the time a response
    arrives is not rounded up to a polling interval.
    """

    def __init__(self, cluster: Cluster):
        self._cluster = cluster
        self._arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._consume, daemon=True)

    def __enter__(self) -> Responses:
        self._thread.start()
        if not self._subscribed.wait(30):
            raise TimeoutError("could not subscribe to job_response")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def wait_for(self, job_id: str, timeout: float = 120) -> tuple[float, dict[str, Any]]:
        with self._changed:
            if not self._changed.wait_for(lambda: job_id in self._arrived, timeout):
                raise TimeoutError(f"no job_response for {job_id} in {timeout}s")
            return self._arrived[job_id]

    def last_of(self, job_ids: list[str], timeout: float = 600) -> float:
        """When the last of these jobs' responses arrived; RuntimeError if any did not
        complete."""
        last = max(self.wait_for(job_id, timeout)[0] for job_id in job_ids)
        failed = [i for i in job_ids if self.wait_for(i)[1]["status"] != "COMPLETE"]
        if failed:
            raise RuntimeError(f"{len(failed)} benchmark jobs failed, e.g. {failed[0]}")
        return last

    def _consume(self) -> None:
        # Other work on this machine may restart the broker: subscribe again, on a queue that
        # outlives the connection, so no response is missed meanwhile.
        while not self._stopping.is_set():
            try:
                self._consume_once()
            except pika.exceptions.AMQPError:
                time.sleep(0.5)

    def _consume_once(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self._cluster.amqp_url))
        channel = connection.channel()
        exchange = f"{self._cluster.namespace}.job_response"
        queue = f"{self._cluster.namespace}.bench-responses"
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, "#")
        channel.basic_consume(queue, self._received, auto_ack=True)
        self._subscribed.set()
        try:
            while not self._stopping.is_set():
                connection.process_data_events(time_limit=0.2)
        finally:
            if connection.is_open:
                connection.close()

    def _received(self, _channel: Any, _method: Any, _properties: Any, body: bytes) -> None:
        arrived = time.monotonic()
        message = json.loads(body)
        with self._changed:
            self._arrived[message["job_id"]] = (arrived, message)
            self._changed.notify_all()


def raw_container(client: docker.APIClient) -> tuple[float, float]:
    """Seconds the docker SDK takes to create, start, wait for and remove `true` in the image,
    and of those the seconds until Docker's start returned (what a dispatch cannot go under)."""
    started = time.monotonic()
    container = client.create_container(
        IMAGE,
        ["sh", "-c", "true"],
        host_config=client.create_host_config(network_mode="none"),
        network_disabled=True,
    )
    client.start(container)
    until_started = time.monotonic() - started
    status = client.wait(container)
    client.remove_container(container, force=True)
    if status.get("StatusCode") != 0:
        raise RuntimeError(f"the raw container failed: {status}")
    return time.monotonic() - started, until_started


def docker_client() -> docker.APIClient:
    return docker.APIClient(version="auto", timeout=120)


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile, nearest rank (p99 of fewer than 100 samples is their maximum)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered), math.ceil(p / 100 * len(ordered))) - 1)
    return ordered[rank]


def summarise(seconds: list[float]) -> dict[str, float]:
    """Median, p99, mean in milliseconds."""
    return {
        "n": len(seconds),
        "p50_ms": round(statistics.median(seconds) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 2),
    }


def progress(message: str) -> None:
    """A line under the scenario's own, so a long step is not silence."""
    print(f"[bench]   {message}", flush=True)


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


class CpuMeter:
    """CPU seconds (user + system) that each of Freight's services, the container engine's
    daemons and the broker spend between `start` and `stop`: where a job's cost goes, beside its
    wall time. Containers' own processes and the kernel's work for them are not in any of these.
    With `children`, the local executor's share is split out of the runner's: "supervisor" is
    its supervisor process (Freight's, counted with the services), "jobs" what the commands it
    reaped spent (the jobs themselves). Processes are looked up at each reading, so one started
    between `start` and `stop` counts from zero."""

    DAEMONS = ("dockerd", "containerd", "beam.smp")

    def __init__(self, cluster: Cluster, children: bool = False):
        self._services = {
            service: process.pid
            for service, process in zip(cluster.services, cluster.processes, strict=True)
        }
        self._children = children and "runner" in self._services
        self._started: dict[str, float] = {}

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> dict[str, float]:
        now = self._now()
        return {group: round(now[group] - self._started.get(group, 0.0), 3) for group in now}

    def _now(self) -> dict[str, float]:
        groups = {service: _process_tree(pid) for service, pid in self._services.items()}
        for daemon in self.DAEMONS:
            groups["broker" if daemon == "beam.smp" else daemon] = _pids_named(daemon)
        now: dict[str, float] = {}
        if self._children:
            runner = self._services["runner"]
            supervisors = _child_pids(runner)
            groups["runner"] = [runner]
            groups["supervisor"] = supervisors
            now["jobs"] = sum(_cpu_seconds(pid, reaped=True) for pid in [runner, *supervisors])
        now.update({group: sum(map(_cpu_seconds, pids)) for group, pids in groups.items()})
        return now


def _child_pids(pid: int) -> list[int]:
    """A process's children, whichever of its threads started them."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(kid) for kid in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids


def _process_tree(pid: int) -> list[int]:
    return [pid] + [p for kid in _child_pids(pid) for p in _process_tree(kid)]


def _pids_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _cpu_seconds(pid: int, reaped: bool = False) -> float:
    """A process's own CPU seconds, or with `reaped` those of its children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # gone: its time is lost to the meter, which says so by its docstring
    first = 13 if reaped else 11  # utime, stime; cutime, cstime
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")
