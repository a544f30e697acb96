"""The runner forgets jobs FREIGHT_FILE_RETENTION after they ended, with a clock of the test's
own: its projection rows (whoever ran the job) and its finished attempts, never an active one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.runner import schema
from freight_server.services.runner.attempt import RunnerContext
from freight_server.services.runner.housekeeping import EndedJobs
from freight_server.services.runner.projection import RunnerProjection
from freight_server.shared.consumer import Logged
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, EventType

RUNNER = "runner-a"
RETENTION = 3600.0
T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    migrate(engine, "runner")
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def projection(engine: sa.Engine, clock: Clock) -> RunnerProjection:
    ctx = RunnerContext(
        runner_id=RUNNER,
        namespace="test",
        executor=None,  # type: ignore[arg-type]
        log=None,
        new_event=EventFactory("test"),
        network="none",
        workdir="/job",
        stop_grace=1.0,
    )
    return RunnerProjection(engine, ctx, slots=1, heartbeat_interval=1.0, clock=clock)


class Log:
    """Events as the scheduler and runners would write them, stamped by the test's clock."""

    def __init__(self, projection: RunnerProjection, engine: sa.Engine, clock: Clock):
        self._projection, self._engine = projection, engine
        self._new_event = EventFactory("test", clock=clock)
        self._position = 0

    def tell(self, type: EventType, job_id: str, **data: Any) -> None:
        self._position += 1
        event = self._new_event(type, job_id, **data)
        with self._engine.begin() as connection, Session(bind=connection) as session:
            self._projection.apply_batch(session, [Logged(event, self._position)])
            session.flush()

    def run(self, job_id: str, runner: str, finish: bool = True) -> None:
        self.tell(EventType.JOB_SUBMITTED, job_id, command="true", image="busybox")
        self.tell(EventType.JOB_ASSIGNED, job_id, attempt=1, runner=runner)
        self.tell(EventType.JOB_STARTED, job_id, attempt=1, runner=runner)
        if finish:
            self.tell(EventType.JOB_FINISHED, job_id, attempt=1, outcome="succeeded")


def launched(engine: sa.Engine, job_id: str, finished_at: datetime | None) -> None:
    with engine.begin() as connection:
        connection.execute(
            schema.attempts.insert().values(
                job_id=job_id, attempt=1, runner_id=RUNNER, launched_at=T0, finished_at=finished_at
            )
        )


def remaining(engine: sa.Engine) -> tuple[set[str], set[str]]:
    with engine.connect() as connection:
        jobs = connection.execute(sa.select(schema.jobs.c.job_id)).scalars()
        attempts = connection.execute(sa.select(schema.attempts.c.job_id)).scalars()
        return set(jobs), set(attempts)


def test_ended_jobs_are_forgotten_a_retention_after_their_end(engine, projection, clock):
    log = Log(projection, engine, clock)
    log.run("ours", RUNNER)
    launched(engine, "ours", finished_at=T0)
    log.run("theirs", "runner-b")
    log.run("running", RUNNER, finish=False)
    launched(engine, "running", finished_at=None)
    forget = EndedJobs(engine, RUNNER, RETENTION, clock)

    clock.now = T0 + timedelta(seconds=RETENTION - 1)
    assert forget.prune() == (0, 0)
    clock.now = T0 + timedelta(seconds=RETENTION + 1)
    log.run("recent", "runner-b")

    assert forget.prune() == (2, 1)
    assert remaining(engine) == ({"running", "recent"}, {"running"})


def test_an_attempt_stays_while_its_job_still_shows_it_active(engine, projection, clock):
    """Its end told but not read back yet: the row is what keeps the attempt from a second
    launch, however old."""
    log = Log(projection, engine, clock)
    log.run("ending", RUNNER, finish=False)
    launched(engine, "ending", finished_at=T0)

    clock.now = T0 + timedelta(seconds=RETENTION * 10)
    assert EndedJobs(engine, RUNNER, RETENTION, clock).prune() == (0, 0)
    assert remaining(engine) == ({"ending"}, {"ending"})
