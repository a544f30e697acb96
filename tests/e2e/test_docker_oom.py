"""A job the kernel's OOM killer ended is told so by the real engine. Under load, Docker 20.10
can hear of the kill only after the exit and leave State.OOMKilled false (1 container in 60,
measured): the runner then looks for the engine's own `oom` event for the container, which
these tests check the engine does keep, and does not keep for a SIGKILL of another cause."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from freight_server.services.runner.executor import ContainerSpec, DockerExecutor, ExitStatus
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import docker_client


class Runs:
    """Containers under a 32 MiB limit, run to their end on the real engine, then removed."""

    def __init__(self) -> None:
        self.executor = DockerExecutor(docker_client())
        self.made: list[str] = []

    def run(self, command: str) -> tuple[str, ExitStatus]:
        spec = ContainerSpec(
            name=f"oom-{uuid.uuid4().hex[:8]}",
            image=TEST_IMAGE,
            command=command,
            labels={"freight.namespace": "test-docker-oom"},
            memory_mb=32,
        )
        container_id = self.executor.create(spec)
        self.made.append(container_id)
        self.executor.start(container_id)
        return container_id, self.executor.wait(container_id)


@pytest.fixture
def runs() -> Iterator[Runs]:
    runs = Runs()
    yield runs
    for container_id in runs.made:
        runs.executor.remove(container_id)


def unflagged(inspected: dict) -> dict:
    """The inspection as the engine leaves it when it heard of the OOM kill too late."""
    return {**inspected, "State": {**inspected["State"], "OOMKilled": False}}


def test_an_oom_kill_is_found_among_the_engines_events(runs):
    container_id, status = runs.run("dd if=/dev/zero of=/dev/null bs=200M count=1")
    assert status == ExitStatus(137, oom_killed=True)
    inspected = docker_client().api.inspect_container(container_id)
    assert runs.executor._oom_reported(container_id, unflagged(inspected))


def test_a_sigkill_of_another_cause_is_an_exit_code(runs):
    # A child shell killing itself with SIGKILL (the container's init cannot be): 137, no OOM.
    container_id, status = runs.run("sh -c 'kill -9 $$'")
    assert status == ExitStatus(137, oom_killed=False)
    inspected = docker_client().api.inspect_container(container_id)
    assert not runs.executor._oom_reported(container_id, inspected)
