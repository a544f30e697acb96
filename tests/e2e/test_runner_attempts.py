"""One attempt against the real Docker engine, in this process: its events go to a log that
records them, and faults are injected where the runner meets the engine."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import docker
import docker.errors
import pytest

from freight_server.services.runner.attempt import (
    Attempt,
    AttemptControl,
    RunnerContext,
    container_name,
)
from freight_server.services.runner.executor import DockerExecutor
from freight_server.shared.events import Event, EventFactory, EventType, utcnow
from freight_server.shared.jobs import JobView, Outcome, Status, evolve
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import docker_client, remove_containers
from tests.waiting import wait_until


class RecordingLog:
    """The event log as an attempt sees it: every append is confirmed, and kept here."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, *events: Event) -> None:
        self.events.extend(events)

    def first(self, type: EventType) -> Event | None:
        return next((e for e in self.events if e.type == type), None)


class FlakyStops:
    """The engine's stop, failing the first `failures` times as an engine error would."""

    def __init__(self, client: docker.DockerClient, failures: int):
        self.calls = 0
        self._stop = client.api.stop
        self._failures = failures

    def __call__(self, container: str, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls <= self._failures:
            raise docker.errors.APIError("injected: the engine failed the stop")
        self._stop(container, *args, **kwargs)


@pytest.fixture
def namespace() -> Iterator[str]:
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    yield namespace
    remove_containers(docker_client(), namespace)


def context(namespace: str, client: docker.DockerClient, log: RecordingLog) -> RunnerContext:
    return RunnerContext(
        runner_id=f"{namespace}-runner",
        namespace=namespace,
        executor=DockerExecutor(client),
        log=log,
        new_event=EventFactory("test-runner"),
        network="none",
        workdir="/job",
        stop_grace=1.0,
    )


def assigned(command: str, namespace: str, **fields: Any) -> JobView:
    return JobView(
        job_id=str(uuid.uuid4()),
        status=Status.PENDING,
        command=command,
        image=TEST_IMAGE,
        created_at=utcnow(),
        attempt=1,
        runner=f"{namespace}-runner",
        **fields,
    )


def launch(job: JobView, ctx: RunnerContext, adopt: bool = False) -> Attempt:
    attempt = Attempt(job, ctx, AttemptControl(), lambda _: None, adopt=adopt)
    threading.Thread(target=attempt.run, daemon=True).start()
    return attempt


def finished(log: RecordingLog, timeout: float = 30) -> Event:
    return wait_until(
        lambda: log.first(EventType.JOB_FINISHED), timeout=timeout, what="the attempt's end"
    )


def test_a_cancel_the_engine_fails_to_carry_out_is_retried_until_the_container_is_gone(
    namespace: str,
):
    client = docker_client()
    stops = client.api.stop = FlakyStops(client, failures=1)
    log = RecordingLog()
    ctx = context(namespace, client, log)
    job = assigned("sleep 300", namespace)
    attempt = launch(job, ctx)
    wait_until(lambda: log.first(EventType.JOB_STARTED), what="the job to start")

    attempt.control.request_stop(Outcome.CANCELLED, "cancelled")

    end = finished(log)
    assert stops.calls >= 2
    view = job
    for event in log.events:
        view = evolve(view, event) or view
    assert (view.status, view.reason) == (Status.FAILED, "cancelled")
    name = container_name(namespace, job.job_id, 1)
    wait_until(lambda: DockerExecutor(client).find(name) is None, what="the container to go")
    assert end.data["outcome"] == Outcome.CANCELLED.value


def test_an_adopted_attempt_whose_container_was_never_made_makes_it(namespace: str):
    """The runner died before the container existed (pulling its image, say): the log says
    the job never started, so the restarted runner goes through creating it."""
    log = RecordingLog()
    job = assigned("echo made", namespace)
    launch(job, context(namespace, docker_client(), log), adopt=True)

    end = finished(log)
    assert (end.data["outcome"], end.data["reason"]) == (Outcome.SUCCEEDED.value, None)
    assert log.first(EventType.JOB_STARTED) is not None


def test_an_adopted_attempt_that_had_started_is_never_run_again(namespace: str):
    log = RecordingLog()
    job = replace(assigned("echo again", namespace), status=Status.RUNNING, started_at=utcnow())
    launch(job, context(namespace, docker_client(), log), adopt=True)

    end = finished(log)
    assert end.data["outcome"] == Outcome.ERROR.value
    assert "vanished" in end.data["reason"]
    assert log.first(EventType.JOB_STARTED) is None
