"""The scheduler reserves GPUs by UUID, frees them when a job ends, and tells why a job waits:
once per change, never in a loop, and not again after a restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from sqlalchemy.orm import Session

from freight_server.services.scheduler.projection import SchedulerProjection
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventFactory, EventType
from freight_server.shared.jobs import Outcome

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GPU = {"index": 0, "uuid": "GPU-sim-a-0", "name": "Simulated GPU", "memory_mb": 16384}


class RecordingLog:
    """The event log's append(*events), recording instead of publishing."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, *events: Event) -> None:
        self.events.extend(events)

    def take(self, type: EventType | None = None) -> list[Event]:
        taken, self.events = self.events, []
        return [e for e in taken if type is None or e.type == type]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - T0).total_seconds()


@pytest.fixture
def world(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'scheduler.db'}")
    migrate(engine, "scheduler")
    clock = Clock()
    log = RecordingLog()
    positions = count()
    new_event = EventFactory("test", clock=clock)

    def scheduler(runner_deadline: float = 30.0) -> SchedulerProjection:
        projection = SchedulerProjection(
            engine,
            log,
            EventFactory("scheduler", clock=clock),
            runner_deadline,
            clock,
            monotonic=clock.monotonic,
        )
        projection.announce_start()
        apply(projection, *log.take())
        assert projection.caught_up
        return projection

    def apply(projection: SchedulerProjection, *events: Event) -> None:
        with Session(engine) as session, session.begin():
            for event in events:
                projection.apply(session, event, next(positions))

    yield scheduler, apply, new_event, log, clock
    engine.dispose()


def test_one_gpu_two_jobs_second_waits_with_its_reason_then_runs(world):
    scheduler, apply, new_event, log, clock = world
    projection = scheduler()
    heartbeat = new_event(
        EventType.RUNNER_HEARTBEAT, None, runner="a", slots=4, gpus=[GPU], cpus=4, memory_mb=4096
    )
    jobs = [
        new_event(EventType.JOB_SUBMITTED, f"job-{n}", command="x", image="b", gpus=1)
        for n in (1, 2)
    ]
    apply(projection, heartbeat, *jobs)

    projection.place_queued_jobs()  # just submitted: placed if it can be, no reason told yet
    [assigned] = log.take()
    assert assigned.type == EventType.JOB_ASSIGNED and assigned.job_id == "job-1"
    assert assigned.data["gpus"] == [GPU]

    clock.now += timedelta(seconds=2)
    projection.place_queued_jobs()
    [told] = log.take()
    assert (told.type, told.job_id) == (EventType.JOB_WAITING, "job-2")
    assert told.data == {"reason": "waiting for 1 GPU; most free on one runner: 0"}

    for _ in range(3):
        projection.place_queued_jobs()
        projection.tick()
    assert log.take(EventType.JOB_WAITING) == []  # told once, before it is even read back

    apply(projection, assigned, told)
    restarted = scheduler()
    # A restarted scheduler counts only heartbeats it hears live, not those it replayed.
    apply(restarted, new_event(EventType.RUNNER_HEARTBEAT, None, **heartbeat.data))
    restarted.place_queued_jobs()
    assert log.take() == []  # the reason it read back is the one it would tell

    ended = new_event(
        EventType.JOB_FINISHED, "job-1", attempt=1, runner="a", outcome=Outcome.FAILED.value
    )
    apply(restarted, ended)
    restarted.place_queued_jobs()
    [second] = log.take()
    assert (second.type, second.job_id, second.data["gpus"]) == (
        EventType.JOB_ASSIGNED,
        "job-2",
        [GPU],
    )


def test_cpus_and_memory_of_active_jobs_are_held(world):
    scheduler, apply, new_event, log, clock = world
    projection = scheduler()
    heartbeat = new_event(
        EventType.RUNNER_HEARTBEAT, None, runner="a", slots=8, gpus=[], cpus=2, memory_mb=1000
    )
    jobs = [
        new_event(EventType.JOB_SUBMITTED, f"job-{n}", command="x", image="b", cpus=1.5, memory=100)
        for n in (1, 2)
    ]
    apply(projection, heartbeat, *jobs)
    clock.now += timedelta(seconds=2)
    projection.place_queued_jobs()
    assert [(e.type, e.job_id) for e in log.events] == [
        (EventType.JOB_ASSIGNED, "job-1"),
        (EventType.JOB_WAITING, "job-2"),
    ]
    apply(projection, *log.take())
    projection.place_queued_jobs()  # job-1 now held by its view, not the in-flight placement
    assert log.take() == []  # job-1 held by its view now; job-2's reason told once


def test_a_job_too_big_for_every_runner_says_so(world):
    scheduler, apply, new_event, log, clock = world
    projection = scheduler()
    apply(
        projection,
        new_event(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=4, gpus=[GPU], cpus=4),
        new_event(EventType.JOB_SUBMITTED, "big", command="x", image="b", gpus=3),
    )
    clock.now += timedelta(seconds=2)
    projection.place_queued_jobs()
    [told] = log.take()
    assert told.data["reason"] == (
        "no runner has 3 GPUs (most on one runner: 1); waiting for one that does to join"
    )
    apply(projection, told)
    big = [{**GPU, "index": i, "uuid": f"GPU-sim-big-{i}"} for i in range(3)]
    apply(
        projection,
        new_event(EventType.RUNNER_HEARTBEAT, None, runner="big", slots=4, gpus=big, cpus=4),
    )
    projection.place_queued_jobs()
    [assigned] = log.take()
    assert (assigned.type, assigned.data["runner"], assigned.data["gpus"]) == (
        EventType.JOB_ASSIGNED,
        "big",
        big,
    )


def test_no_runner_yet_is_told_only_after_runners_had_a_deadline(world):
    scheduler, apply, new_event, log, clock = world
    projection = scheduler(runner_deadline=5)
    apply(projection, new_event(EventType.JOB_SUBMITTED, "early", command="x", image="b"))
    clock.now += timedelta(seconds=2)
    projection.place_queued_jobs()  # just started: runners may not have spoken yet
    assert log.take() == []

    clock.now += timedelta(seconds=4)
    projection.place_queued_jobs()
    [waiting] = log.take()
    assert waiting.data == {"reason": "waiting for a runner to join"}
