"""The scheduler keeps the queue and the active jobs' holds in memory: a pass costs what it
places, not the queue's length; the memory follows only committed state; and every waiting
job is still told its reason once, head of the queue first, a bounded few a pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.scheduler import projection as scheduler
from freight_server.services.scheduler.backlog import Backlog
from freight_server.services.scheduler.projection import SchedulerProjection
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventFactory, EventType
from freight_server.shared.jobs import JobView, Outcome, Status
from tests.unit.test_gpus_waiting import Clock, RecordingLog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def view(job_id: str, status: Status = Status.QUEUED, runner: str | None = None) -> JobView:
    return JobView(job_id, status, "true", "busybox", T0, runner=runner, attempt=1)


def test_backlog_is_fifo_by_position_and_holds_what_is_active():
    backlog = Backlog()
    for position, job_id in ((3, "c"), (1, "a"), (2, "b")):
        backlog.record(view(job_id), position)
    backlog.record(view("b", Status.PENDING, runner="r"), 2)
    assert [job.job_id for _, job in backlog.queued()] == ["a", "c"]
    assert [h.job_id for h in backlog.holds()] == ["b"]
    backlog.record(view("b"), 2)  # its runner was lost: back in the queue, in its old place
    assert [(p, job.job_id) for p, job in backlog.queued()] == [(1, "a"), (2, "b"), (3, "c")]
    assert [job.job_id for _, job in backlog.queued(after=1)] == ["b", "c"]
    assert list(backlog.holds()) == []
    backlog.record(view("a", Status.FAILED), 1)
    assert len(backlog) == 2


@pytest.fixture
def world(tmp_path):
    yield from scheduler_world(tmp_path)


def scheduler_world(tmp_path):
    """A started scheduler over SQLite, its recorded log and a clock that tests move."""
    engine = create_engine(f"sqlite:///{tmp_path / 'scheduler.db'}")
    migrate(engine, "scheduler")
    clock, log, positions = Clock(), RecordingLog(), count()
    new_event = EventFactory("test", clock=clock)

    def apply(projection: SchedulerProjection, *events: Event) -> None:
        with Session(engine) as session, session.begin():
            for event in events:
                projection.apply(session, event, next(positions))

    projection = SchedulerProjection(
        engine, log, EventFactory("scheduler", clock=clock), 30.0, clock, clock.monotonic
    )
    projection.announce_start()
    apply(projection, *log.take())
    yield projection, apply, new_event, log, clock, engine
    engine.dispose()


def submitted(new_event: EventFactory, n: int) -> list[Event]:
    return [
        new_event(EventType.JOB_SUBMITTED, f"job-{i:05}", command="x", image="b") for i in range(n)
    ]


def heartbeat(new_event: EventFactory, slots: int, runner: str = "a") -> Event:
    return new_event(EventType.RUNNER_HEARTBEAT, None, runner=runner, slots=slots, gpus=[])


def test_a_pass_reads_no_job_from_the_table_once_the_queue_is_in_memory(world):
    projection, apply, new_event, log, clock, engine = world
    apply(projection, heartbeat(new_event, slots=2), *submitted(new_event, 3000))
    projection.place_queued_jobs()  # loads the queue from the table, once
    assigned = log.take(EventType.JOB_ASSIGNED)
    assert [e.job_id for e in assigned] == ["job-00000", "job-00001"]

    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    apply(projection, *assigned)
    statements.clear()
    projection.place_queued_jobs()
    assert log.take() == []  # both slots held by the jobs' committed views
    assert not any("scheduler_jobs" in s for s in statements)

    ended = new_event(
        EventType.JOB_FINISHED, "job-00000", attempt=1, runner="a", outcome=Outcome.FAILED.value
    )
    apply(projection, ended)
    statements.clear()
    projection.place_queued_jobs()
    [next_one] = log.take()
    assert (next_one.type, next_one.job_id) == (EventType.JOB_ASSIGNED, "job-00002")
    assert not any("scheduler_jobs" in s for s in statements)


def test_a_rolled_back_batch_leaves_no_trace_in_memory(world):
    projection, apply, new_event, log, clock, engine = world
    apply(projection, heartbeat(new_event, slots=1), *submitted(new_event, 2))
    projection.place_queued_jobs()
    [assigned] = log.take(EventType.JOB_ASSIGNED)
    assert assigned.job_id == "job-00000"

    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        projection.apply(session, assigned, 100)
        raise RuntimeError("the offset moved: the batch is rolled back")
    projection.place_queued_jobs()
    assert log.take(EventType.JOB_ASSIGNED) == []  # still in flight, the slot still taken

    apply(projection, assigned)
    ended = new_event(
        EventType.JOB_FINISHED, "job-00000", attempt=1, runner="a", outcome=Outcome.FAILED.value
    )
    apply(projection, ended)
    projection.place_queued_jobs()
    assert [e.job_id for e in log.take(EventType.JOB_ASSIGNED)] == ["job-00001"]


def test_an_event_set_aside_under_a_savepoint_leaves_memory_as_the_tables(world):
    projection, apply, new_event, log, clock, engine = world
    first, second = submitted(new_event, 2)
    apply(projection, heartbeat(new_event, slots=2), first)
    projection.place_queued_jobs()
    [assigned] = log.take(EventType.JOB_ASSIGNED)
    bad = new_event(EventType.JOB_SUBMITTED, "bad", image="b")  # no command: set aside
    with Session(engine) as session, session.begin():
        for position, event in ((200, assigned), (201, bad)):
            try:
                with session.begin_nested():
                    projection.apply(session, event, position)
            except KeyError:
                pass  # the consumer dead-letters it
    apply(projection, second)
    projection.place_queued_jobs()  # job-00000 holds one slot, as its view: not in flight too
    assert [e.job_id for e in log.take(EventType.JOB_ASSIGNED)] == ["job-00001"]


def test_every_waiting_job_is_told_once_a_few_a_pass_head_first(world, monkeypatch):
    monkeypatch.setattr(scheduler, "MAX_REASONS_PER_PASS", 10)
    monkeypatch.setattr(scheduler, "MAX_REASON_SCAN", 25)
    projection, apply, new_event, log, clock, engine = world
    jobs = submitted(new_event, 101)
    apply(projection, heartbeat(new_event, slots=1), *jobs)
    clock.now += timedelta(seconds=2)
    told: list[Event] = []
    for _ in range(20):
        projection.place_queued_jobs()
        events = log.take()
        assert len([e for e in events if e.type == EventType.JOB_WAITING]) <= 10
        told += events
        apply(projection, *events)
    assert told[0].type == EventType.JOB_ASSIGNED
    waiting = [e for e in told if e.type == EventType.JOB_WAITING]
    assert [e.job_id for e in waiting] == [e.job_id for e in jobs[1:]]  # each once, in order
    assert {e.data["reason"] for e in waiting} == {"waiting for a free slot; every runner is busy"}

    # The runner is lost: every job's reason changes, told again from the head of the queue.
    clock.now += timedelta(seconds=31)  # past the first deadline: no runner now means none
    apply(projection, new_event(EventType.RUNNER_LOST, None, runner="a", jobs=[]))
    projection.place_queued_jobs()
    again = log.take()
    assert [e.job_id for e in again] == [e.job_id for e in jobs[1:11]]
    assert {e.data["reason"] for e in again} == {"waiting for a runner to join"}


def test_a_young_job_is_told_later_and_not_skipped(world):
    projection, apply, new_event, log, clock, engine = world
    apply(projection, heartbeat(new_event, slots=1), *submitted(new_event, 2))
    projection.place_queued_jobs()
    assert [e.type for e in log.take()] == [EventType.JOB_ASSIGNED]  # job-00001 is too young
    clock.now += timedelta(seconds=2)
    late = new_event(EventType.JOB_SUBMITTED, "late", command="x", image="b")
    apply(projection, late)
    projection.place_queued_jobs()
    assert [e.job_id for e in log.take()] == ["job-00001"]  # "late" is young now
    clock.now += timedelta(seconds=2)
    projection.place_queued_jobs()
    assert [e.job_id for e in log.take()] == ["late"]


def test_a_job_retried_after_its_runner_is_lost_is_placed_again_in_its_place(world):
    """Back in the queue, it keeps the place it was submitted in: ahead of what came later."""
    projection, apply, new_event, log, clock, engine = world
    first, second = (
        new_event(EventType.JOB_SUBMITTED, f"job-{i}", command="x", image="b", max_attempts=2)
        for i in range(2)
    )
    apply(projection, heartbeat(new_event, slots=1), first, second)
    projection.place_queued_jobs()
    [assigned] = log.take(EventType.JOB_ASSIGNED)
    assert assigned.job_id == "job-0"
    apply(projection, assigned)

    lost = new_event(
        EventType.JOB_FINISHED,
        "job-0",
        attempt=1,
        runner="a",
        outcome=Outcome.LOST.value,
        exit_code=None,
        reason="runner lost",
    )
    apply(projection, lost)
    projection.place_queued_jobs()
    [again] = log.take(EventType.JOB_ASSIGNED)
    assert (again.job_id, again.data["attempt"]) == ("job-0", 2)
