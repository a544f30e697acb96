"""The compose deployment, started and used as docs/deploy.md says, through its published ports.

`compose.yaml` runs here on the images `make images` builds from Debian's packages (no registry
is reachable), with whichever compose tool is installed: `docker compose`, or Debian's
docker-compose 1.29. The user's side is this host: the API and RabbitMQ through their published
ports on 127.0.0.1, as the original API document's examples use them.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pika
import pytest
import requests

from freight_server.shared.tokens import add_token
from tests.e2e.conftest import docker_client, free_port, remove_containers
from tests.integration.test_compose import ROOT, compose_tool
from tests.waiting import wait_until

pytestmark = pytest.mark.docker

IMAGES = {
    "FREIGHT_IMAGE": "freight:local",
    "RABBITMQ_IMAGE": "freight/rabbitmq:local",
    "POSTGRES_IMAGE": "freight/postgres:local",
    "FREIGHT_DEFAULT_IMAGE": "freight/busybox:local",
}
# compose.yaml's own RabbitMQ user (RABBITMQ_USER, RABBITMQ_PASSWORD).
BROKER_CREDENTIALS = pika.PlainCredentials("freight", "freight")


class Stack:
    """One compose project: its tool, its environment, and the user's side of it."""

    def __init__(self, tool: list[str], name: str, env: dict[str, str], token: str):
        self.tool, self.name, self.env = tool, name, env
        self.url = f"http://127.0.0.1:{env['FREIGHT_API_PORT']}"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def compose(self, *arguments: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [*self.tool, "-p", self.name, "-f", str(ROOT / "compose.yaml"), *arguments],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"compose {' '.join(arguments)}:\n{result.stderr[-4000:]}"
        return result.stdout

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def wait_ready(self, what: str) -> None:
        wait_until(self.ready, timeout=180, what=f"the API's /readyz to answer 200 ({what})")

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_for(self, job_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(
            lambda: (job := self.job(job_id))["status"] in statuses and job,
            timeout=timeout,
            what=f"job {job_id} to reach {statuses}",
        )

    def download(self, job_id: str, path: str) -> bytes:
        response = self.http.get(f"{self.url}/files", params={"job_id": job_id, "path": path})
        assert response.status_code == 200, response.text
        return response.content

    def responses(self) -> Responses:
        port = int(self.env["RABBITMQ_PORT"])
        return Responses(
            pika.ConnectionParameters("127.0.0.1", port, credentials=BROKER_CREDENTIALS)
        )


class Responses:
    """The original document's subscriber: the `job_response` queue, read from the host."""

    def __init__(self, parameters: pika.ConnectionParameters):
        self.connection = pika.BlockingConnection(parameters)
        self.channel = self.connection.channel()
        self.seen: dict[str, dict[str, Any]] = {}

    def wait_for(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        def arrived() -> dict[str, Any] | None:
            while True:
                method, _, body = self.channel.basic_get("job_response")
                if method is None:
                    return self.seen.get(job_id)
                self.channel.basic_ack(method.delivery_tag)
                message = json.loads(body)
                self.seen[message["job_id"]] = message

        return wait_until(arrived, timeout=timeout, what=f"job_response for {job_id}")

    def close(self) -> None:
        self.connection.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    client = docker_client()
    tool = compose_tool()
    if tool is None:
        pytest.skip("no compose tool here: `make images` installs one")
    missing = [image for image in IMAGES.values() if not _present(client, image)]
    if missing:
        pytest.skip(f"images {missing} are not built: `make images`")

    home = tmp_path_factory.mktemp("stack")
    tokens = home / "tokens.jsonl"
    token = add_token(tokens, "admin", "admin")
    tokens.chmod(0o644)  # the API's user (uid 10001) reads it
    name = f"freighttest{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        **IMAGES,
        "FREIGHT_PUBLISH_ADDRESS": "127.0.0.1",
        "FREIGHT_API_PORT": str(free_port()),
        "RABBITMQ_PORT": str(free_port()),
        "RABBITMQ_MANAGEMENT_PORT": str(free_port()),
        "FREIGHT_TOKENS_PATH": str(tokens),
        # The runner's job containers are the host engine's: this namespace labels them.
        "FREIGHT_NAMESPACE": name,
        "FREIGHT_RUNNER_ID": f"{name}-runner",
        "FREIGHT_HEARTBEAT_INTERVAL": "2",
        "FREIGHT_STOP_GRACE": "2",
    }
    stack = Stack(tool, name, env, token)
    try:
        stack.compose("up", "-d")
        stack.wait_ready("after `up -d`")
        yield stack
    except BaseException:
        print(stack.compose("logs", "--tail", "60"))
        raise
    finally:
        remove_containers(client, name)
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "3")
        assert not client.volumes.list(filters={"label": f"com.docker.compose.project={name}"})


def _present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


@pytest.mark.timeout(420)
def test_the_original_documents_examples_through_the_published_ports(stack: Stack):
    # POST /submission as the document's example: a command and a file named by its path.
    response = stack.http.post(
        f"{stack.url}/submission",
        data={"command": "ls -al /tmp"},
        files=[("file[]", ("/tmp/file.png", b"\x89PNG not really", "image/png"))],
    )
    assert response.status_code == 201, response.text
    listing = response.json()
    assert listing["command"] == "ls -al /tmp"

    responses = stack.responses()
    try:
        message = responses.wait_for(listing["job_id"])
    finally:
        responses.close()
    assert message["status"] == "COMPLETE" and message["exit_code"] == 0

    job = stack.job(listing["job_id"])
    assert job["status"] == "COMPLETE"
    logs = stack.http.get(f"{stack.url}/jobs/{listing['job_id']}/logs").text
    assert "file.png" in logs
    assert stack.download(listing["job_id"], "/.freight/stdout").decode() == logs

    # A job that runs until cancelled: listed among the unfinished, then DELETE.
    sleeper = stack.http.post(f"{stack.url}/jobs", data={"command": "sleep 600"}).json()
    stack.wait_for(sleeper["job_id"], "RUNNING")
    unfinished = stack.http.get(f"{stack.url}/jobs").json()
    assert sleeper["job_id"] in {j["job_id"] for j in unfinished["results"]}
    assert unfinished["count"] == len(unfinished["results"])
    cancel = stack.http.delete(f"{stack.url}/jobs/{sleeper['job_id']}")
    assert cancel.status_code == 202 and cancel.json()["id"] == sleeper["job_id"]
    cancelled = stack.wait_for(sleeper["job_id"], "FAILED", "COMPLETE")
    assert (cancelled["status"], cancelled["reason"]) == ("FAILED", "cancelled")
    assert stack.http.get(f"{stack.url}/jobs/{uuid.uuid4()}").status_code == 404


@pytest.mark.timeout(420)
def test_restarting_the_runner_and_the_broker_mid_job_loses_nothing(stack: Stack):
    client = docker_client()
    held = stack.http.post(
        f"{stack.url}/jobs",
        data={
            "command": "while [ ! -e /job/release ]; do sleep 0.1; done; echo released > result.txt"
        },
    ).json()
    stack.wait_for(held["job_id"], "RUNNING")

    # The runner goes away while its job runs; a job submitted meanwhile waits for it.
    stack.compose("stop", "runner")
    queued = stack.http.post(f"{stack.url}/jobs", data={"command": "echo b > b.txt"}).json()
    stack.compose("start", "runner")
    # Then the broker restarts, the log and the queues on its volume.
    stack.compose("restart", "rabbitmq")
    stack.wait_ready("after RabbitMQ's restart")

    # The held job's container lived through it all; let it finish.
    (container,) = client.containers.list(filters={"label": f"freight.job_id={held['job_id']}"})
    assert container.exec_run(["touch", "/job/release"]).exit_code == 0

    responses = stack.responses()
    try:
        for job in (held, queued):
            assert responses.wait_for(job["job_id"])["status"] == "COMPLETE", job
    finally:
        responses.close()
    assert stack.download(held["job_id"], "/job/result.txt") == b"released\n"
    assert stack.download(queued["job_id"], "/job/b.txt") == b"b\n"
    # One attempt, in the one container it started: the restarted runner adopted it (it may
    # say so again with a JobStarted of the same attempt, which the fold takes once).
    events = stack.http.get(f"{stack.url}/jobs/{held['job_id']}/events").json()["events"]
    assert [e["type"] for e in events].count("JobAssigned") == 1, events
    assert {e["data"]["attempt"] for e in events if e["type"] == "JobStarted"} == {1}, events
    assert stack.job(held["job_id"])["attempt"] == 1
