"""Freight as users run it: each service its own process, driven over HTTP and AMQP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import docker
import pika
import pytest
import requests

from freight_server.shared.bus import Topology
from freight_server.shared.config import Settings
from freight_server.shared.tokens import add_token
from tests.conftest import Namespaces, fresh_settings
from tests.waiting import wait_until


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        pytest.skip(f"no Docker engine ({exc}); `make docker` starts one")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "FREIGHT_AMQP_URL": settings.amqp_url,
        "FREIGHT_HOME": str(settings.home),
        "FREIGHT_NAMESPACE": settings.namespace,
        "FREIGHT_RESPONSE_EXCHANGE": settings.response_exchange,
        "FREIGHT_RESPONSE_QUEUE": settings.response_queue,
        "FREIGHT_API_BIND": settings.api_bind,
        "FREIGHT_DEFAULT_IMAGE": settings.default_image,
        "FREIGHT_RUNNER_ID": settings.runner_id,
        "FREIGHT_RUNNER_SLOTS": str(settings.runner_slots),
        "FREIGHT_HEARTBEAT_INTERVAL": str(settings.heartbeat_interval),
        "FREIGHT_RUNNER_DEADLINE": str(settings.runner_deadline),
        "FREIGHT_STOP_GRACE": str(settings.stop_grace),
        "PYTHONUNBUFFERED": "1",
    }
    env.update({f"FREIGHT_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@dataclass
class Cluster:
    settings: Settings
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started_as: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # Environment beyond FREIGHT_* for one process (e.g. a faked clock), kept across restarts.
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.settings.api_bind}"

    def start(self, service: str, name: str | None = None, **overrides: Any) -> None:
        name = name or service
        self.started_as[name] = (service, overrides)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "freight.cli", "serve", service],
            env={**service_env(self.settings, **overrides), **self.extra_env.get(name, {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def restart(self, name: str) -> None:
        """Start again what was started under this name, with the same settings."""
        service, overrides = self.started_as[name]
        self.start(service, name, **overrides)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(timeout=20)

    def stop_all(self) -> None:
        """SIGTERM to every service at once, then wait for each: they shut down in parallel."""
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for name in list(self.processes):
            process = self.processes.pop(name)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"{name} did not stop within 20s of SIGTERM") from None

    def log_of(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    # -- the user's side -------------------------------------------------------------------

    def submit(self, command: str, path: str = "/jobs", **fields: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}{path}", data={"command": command, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.url}/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_status(self, job_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout=timeout,
            what=f"job {job_id} to reach {statuses}",
        )


@pytest.fixture
def cluster_settings(settings: Settings) -> Settings:
    return replace(settings, api_bind=f"127.0.0.1:{free_port()}")


@pytest.fixture(scope="module")
def module_cluster_settings(
    amqp_url: str, tmp_path_factory: pytest.TempPathFactory, used_namespaces: Namespaces
) -> Iterator[Settings]:
    """cluster_settings for a module whose quick checks share one cluster (as the `settings`
    fixture makes them: a namespace and a home of its own)."""
    configured = replace(
        fresh_settings(amqp_url, tmp_path_factory.mktemp("home")),
        api_bind=f"127.0.0.1:{free_port()}",
    )
    yield configured
    used_namespaces.finished(configured)


SERVICES = ("filestore", "api", "scheduler", "runner")


@contextmanager
def running_cluster(
    settings: Settings,
    logs: Path,
    runner_overrides: dict[str, Any] | None = None,
    start: Callable[[Cluster], None] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Iterator[Cluster]:
    """Every service as its own process (or those `start` starts), each with its `overrides`
    (FREIGHT_* settings by service); afterwards stopped, and their containers removed."""
    client = docker_client()
    logs.mkdir(exist_ok=True)
    cluster = Cluster(settings, logs)
    per_service = {"runner": runner_overrides or {}, **(overrides or {})}
    if start is not None:
        start(cluster)
    for service in SERVICES if start is None else ():
        cluster.start(service, **per_service.get(service, {}))
    try:
        # Inside: should the API never answer, what did start is still stopped.
        wait_until(lambda: _answers(cluster.url), timeout=90, what="the API to answer")
        yield cluster
    finally:
        cluster.stop_all()
        remove_containers(client, settings.namespace)
        for log in sorted(logs.glob("*.log")):
            sys.stderr.write(f"--- {log.stem}\n{log.read_text(errors='replace')[-3000:]}\n")


@pytest.fixture
def runner_overrides() -> dict[str, Any]:
    """FREIGHT_* settings for the cluster's runner; a test module may override this fixture."""
    return {}


@pytest.fixture
def cluster(
    cluster_settings: Settings, tmp_path: Path, runner_overrides: dict[str, Any]
) -> Iterator[Cluster]:
    """The whole system on a fresh namespace."""
    with running_cluster(cluster_settings, tmp_path / "logs", runner_overrides) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def shared_cluster(
    module_cluster_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The whole system, once for a module whose checks each make their own jobs and leave none
    running (a module opts in by defining `cluster` from it): a start costs seconds."""
    with running_cluster(module_cluster_settings, tmp_path_factory.mktemp("logs")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("auth") / "tokens"


@pytest.fixture(scope="module")
def tokens(tokens_file: Path) -> dict[str, str]:
    """Two users' tokens and an admin's, in `tokens_file`."""
    return {
        "alice": add_token(tokens_file, "alice", "user"),
        "bob": add_token(tokens_file, "bob", "user"),
        "root": add_token(tokens_file, "root", "admin"),
    }


# A module that starts a cluster with `tokens_file` names it `secured`; these are its users.
@pytest.fixture
def alice(secured: Cluster, tokens: dict[str, str]) -> User:
    return User(secured.url, "alice", tokens["alice"])


@pytest.fixture
def bob(secured: Cluster, tokens: dict[str, str]) -> User:
    return User(secured.url, "bob", tokens["bob"])


@pytest.fixture
def root(secured: Cluster, tokens: dict[str, str]) -> User:
    return User(secured.url, "root", tokens["root"])


class User(requests.Session):
    """A user of a cluster that requires tokens: every request carries the user's token."""

    def __init__(self, url: str, name: str, token: str | None):
        super().__init__()
        self.url, self.name = url, name
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        return super().request(method, f"{self.url}{url!s}", *args, **kwargs)

    def submit(self, command: str, **fields: Any) -> str:
        response = self.post("/jobs", json={"command": command, **fields})
        assert response.status_code == 201, response.text
        return str(response.json()["job_id"])

    def wait_for(self, job_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            job = self.get(f"/jobs/{job_id}").json()
            return job if job["status"] in statuses else None

        return wait_until(reached, timeout=timeout, what=f"job {job_id} to reach {statuses}")


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=1).ok
    except requests.ConnectionError:
        return False


@pytest.fixture
def responses(cluster_settings: Settings) -> Iterator[Any]:
    """A subscriber of `job_response` as the user's document writes one, with pika."""
    connection = pika.BlockingConnection(pika.URLParameters(cluster_settings.amqp_url))
    channel = connection.channel()
    channel.exchange_declare(cluster_settings.response_exchange, "topic", durable=True)
    channel.queue_declare(
        cluster_settings.response_queue,
        durable=True,
        arguments=Topology.from_settings(cluster_settings).response_queue_bound(),
    )
    channel.queue_bind(cluster_settings.response_queue, cluster_settings.response_exchange, "#")

    class Responses:
        seen: dict[str, dict[str, Any]] = {}

        def wait_for(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
            def arrived() -> dict[str, Any] | None:
                while True:
                    method, _, body = channel.basic_get(cluster_settings.response_queue)
                    if method is None:
                        return self.seen.get(job_id)
                    channel.basic_ack(method.delivery_tag)
                    message = json.loads(body)
                    self.seen[message["job_id"]] = message

            return wait_until(arrived, timeout=timeout, what=f"job_response for {job_id}")

    yield Responses()
    connection.close()


def remove_containers(client: docker.DockerClient, namespace: str) -> None:
    """Every container of the namespace, whether or not a runner is removing it too."""
    for container in client.containers.list(
        all=True, filters={"label": f"freight.namespace={namespace}"}, ignore_removed=True
    ):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # its removal already in progress
                raise
