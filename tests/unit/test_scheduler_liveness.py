"""Lag is not death: a runner is lost when it is silent, judged on the scheduler's own clock,
never because the scheduler itself was not listening or the runner's clock is off. And no job
stays PENDING on a runner already declared lost."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from freight_server.services.scheduler import schema
from freight_server.services.scheduler.projection import SchedulerProjection
from freight_server.shared.events import Event, EventFactory, EventType
from freight_server.shared.jobs import Outcome
from tests.unit.test_scheduler_backlog import scheduler_world, submitted

DEADLINE = 30  # the world's runner deadline, in seconds


@pytest.fixture
def world(tmp_path):
    yield from scheduler_world(tmp_path)


def ticking(
    projection: SchedulerProjection,
    clock,
    seconds: int,
    heartbeat: Callable[[], Event] | None = None,
    apply=None,
) -> None:
    """`seconds` of a scheduler at work: a pass every second, and a heartbeat from the runner
    every five seconds when it has one."""
    for second in range(1, seconds + 1):
        clock.now += timedelta(seconds=1)
        if heartbeat is not None and second % 5 == 0:
            apply(projection, heartbeat())
        projection.tick()


def runner_clock(clock, skew: float) -> EventFactory:
    return EventFactory("runner", clock=lambda: clock.now + timedelta(seconds=skew))


@pytest.mark.parametrize("skew", [-60, 0, 60])
def test_a_runner_whose_clock_is_off_gets_work_and_is_lost_only_when_silent(world, skew):
    projection, apply, new_event, log, clock, engine = world
    runner = runner_clock(clock, skew)

    def heartbeat() -> Event:
        return runner(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=2, gpus=[])

    apply(projection, heartbeat(), *submitted(new_event, 1))
    projection.tick()
    [assigned] = log.take()
    assert (assigned.type, assigned.data["runner"]) == (EventType.JOB_ASSIGNED, "a")
    apply(projection, assigned)

    ticking(projection, clock, 3 * DEADLINE, heartbeat, apply)
    assert log.take(EventType.RUNNER_LOST) == []  # it kept speaking

    ticking(projection, clock, DEADLINE - 5)
    assert log.take(EventType.RUNNER_LOST) == []  # silent, but not for a deadline yet
    ticking(projection, clock, 10)
    events = log.take()
    assert [e.type for e in events] == [EventType.JOB_FINISHED, EventType.RUNNER_LOST]
    assert events[0].data["outcome"] == Outcome.LOST.value


def test_a_stalled_scheduler_does_not_take_its_own_silence_for_the_runners(world):
    projection, apply, new_event, log, clock, engine = world

    def heartbeat() -> Event:
        return new_event(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=2, gpus=[])

    apply(projection, heartbeat())
    ticking(projection, clock, 10, heartbeat, apply)
    clock.now += timedelta(seconds=2 * DEADLINE)  # the database stalled: nothing read meanwhile
    projection.tick()
    assert log.take(EventType.RUNNER_LOST) == []
    apply(projection, heartbeat())  # what the runner said during the stall, read at last
    ticking(projection, clock, 2 * DEADLINE, heartbeat, apply)
    assert log.take(EventType.RUNNER_LOST) == []


class StallingEars:
    """Heartbeats heard on their own stream; one pass stalls on its database while it takes
    them, as the scheduler's did under the fault suite's locked tables."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.heard: list[Event] = []
        self.stall: timedelta | None = None

    def take(self) -> list[Event]:
        taken, self.heard = self.heard, []
        if self.stall is not None:
            self.clock.now += self.stall
            self.stall = None
        return taken

    def listening_since(self) -> float | None:
        return 0.0


def hearing(world, ears) -> SchedulerProjection:
    """A started scheduler of the world that hears heartbeats through `ears`."""
    _, apply, new_event, log, clock, engine = world
    projection = SchedulerProjection(
        engine, log, new_event, DEADLINE, clock, clock.monotonic, heartbeats=ears
    )
    projection.announce_start()
    apply(projection, *log.take())
    return projection


def test_a_pass_that_stalls_midway_does_not_take_its_own_silence_for_the_runners(world):
    _, _, new_event, log, clock, _ = world
    ears = StallingEars(clock)
    projection = hearing(world, ears)

    def heartbeat() -> None:
        ears.heard.append(new_event(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=2, gpus=[]))

    for _ in range(3):
        heartbeat()
        ticking(projection, clock, 5)
    ears.stall = timedelta(seconds=2 * DEADLINE)  # the next pass waits on its database
    ticking(projection, clock, 1)
    assert log.take(EventType.RUNNER_LOST) == []
    heartbeat()  # what the runner said meanwhile, heard by the next pass
    ticking(projection, clock, DEADLINE // 2)
    assert log.take(EventType.RUNNER_LOST) == []


def test_no_runner_is_judged_while_the_scheduler_is_behind_the_log(world):
    projection, apply, new_event, log, clock, engine = world
    apply(projection, new_event(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=2, gpus=[]))
    projection.after_batch(caught_up=False)  # a full batch: more of the log waits unread
    ticking(projection, clock, 2 * DEADLINE)
    assert log.take(EventType.RUNNER_LOST) == []
    projection.after_batch(caught_up=True)  # read it all, and the runner said nothing more
    ticking(projection, clock, 1)
    assert [e.type for e in log.take(EventType.RUNNER_LOST)] == [EventType.RUNNER_LOST]


class Ears:
    """The heartbeats' subscription as the scheduler sees it: what was heard, and since when
    it has been listening (None: the broker is away and nothing can be heard)."""

    def __init__(self, clock) -> None:
        self.heard: list[Event] = []
        self.since: float | None = clock.monotonic()

    def take(self) -> list[Event]:
        taken, self.heard = self.heard, []
        return taken

    def listening_since(self) -> float | None:
        return self.since


def test_no_runner_is_judged_while_its_heartbeats_cannot_be_heard(world):
    _, _, new_event, log, clock, _ = world
    ears = Ears(clock)
    projection = hearing(world, ears)
    ears.heard.append(new_event(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=2, gpus=[]))
    ticking(projection, clock, 5)

    ears.since = None  # the broker restarts: the runner speaks, nobody hears
    ticking(projection, clock, 2 * DEADLINE)
    assert log.take(EventType.RUNNER_LOST) == []
    ears.since = clock.monotonic()  # subscribed again: a full deadline to be heard from
    ticking(projection, clock, DEADLINE - 5)
    assert log.take(EventType.RUNNER_LOST) == []
    ticking(projection, clock, 10)  # and it said nothing since
    assert [e.data["runner"] for e in log.take(EventType.RUNNER_LOST)] == ["a"]


def test_a_job_assigned_to_a_runner_already_lost_does_not_stay_pending(world):
    projection, apply, new_event, log, clock, engine = world
    apply(
        projection,
        new_event(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=2, gpus=[]),
        *submitted(new_event, 1),
    )
    projection.tick()
    [assigned] = log.take()  # published, but read back only after the runner is lost
    ticking(projection, clock, DEADLINE + 2)
    [lost] = log.take(EventType.RUNNER_LOST)
    assert lost.data["jobs"] == []  # the assignment was not read back yet
    apply(projection, lost, assigned)

    ticking(projection, clock, 3)
    [ended] = log.take()
    assert (ended.type, ended.job_id) == (EventType.JOB_FINISHED, assigned.job_id)
    assert (ended.data["attempt"], ended.data["outcome"]) == (1, Outcome.LOST.value)
    apply(projection, ended)
    ticking(projection, clock, 3)
    assert log.take(EventType.JOB_FINISHED) == []  # told once


def test_ended_jobs_leave_the_table_once_their_retention_passed(world):
    _, apply, new_event, log, clock, engine = world
    projection = SchedulerProjection(
        engine,
        log,
        EventFactory("scheduler", clock=clock),
        DEADLINE,
        clock,
        clock.monotonic,
        retention=timedelta(days=7),
    )
    projection.announce_start()
    apply(projection, *log.take())
    ended, queued = submitted(new_event, 2)
    failed = new_event(EventType.JOB_CANCEL_REQUESTED, ended.job_id)
    apply(projection, ended, queued, failed)

    def kept() -> set[str]:
        with engine.connect() as connection:
            return set(connection.execute(sa.select(schema.jobs.c.job_id)).scalars())

    clock.now += timedelta(days=6)
    projection.prune_ended_jobs()
    assert kept() == {ended.job_id, queued.job_id}
    clock.now += timedelta(days=2)
    projection.prune_ended_jobs()
    assert kept() == {queued.job_id}  # a queued job is never pruned, however old
