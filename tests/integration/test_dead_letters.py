"""One bad event never halts a projection, on SQLite and PostgreSQL, with the real stream: a
poison event between good ones is set aside in the dead letters while the good ones are applied
and the offset moves past it; a fault of the database is retried instead; an operator lists the
dead letters and replays them (`freight dead-letters`); a database ahead of the stream refuses
to run."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight.cli import main as freight
from freight_server.services.api import schema
from freight_server.services.api.projection import ApiProjection
from freight_server.services.api.runners import RunnerBoard
from freight_server.services.scheduler import schema as scheduler_schema
from freight_server.services.scheduler.projection import SchedulerProjection
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import LogBehindProjection, Logged, Projection, StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventFactory, EventType, encode, utcnow
from tests.integration.consuming import consuming, run_until_raises
from tests.waiting import wait_until

new_event = EventFactory("test")


def submitted(job_id: str) -> bytes:
    return encode(new_event(EventType.JOB_SUBMITTED, job_id, command="true", image="busybox"))


def heartbeat(runner: Any, naive: bool = False) -> bytes:
    event = new_event(EventType.RUNNER_HEARTBEAT, None, runner=runner, slots=1, gpus=[])
    raw = event.to_dict()
    if naive:  # as a producer that forgot its time zone would write it
        raw["occurred_at"] = utcnow().replace(tzinfo=None).isoformat()
    return json.dumps(raw).encode()


def outputs_saved(job_id: str, **data: Any) -> bytes:
    return encode(new_event(EventType.JOB_OUTPUTS_SAVED, job_id, attempt=1, **data))


@dataclass(frozen=True)
class Poison:
    """Events the poison needs before it (applied fine), then the poison itself."""

    before: Sequence[bytes]
    poison: bytes
    applies_on_sqlite: bool = False  # SQLite enforces no string length


POISONS = {
    # PostgreSQL: DataError (StringDataRightTruncation) from api_jobs.job_id, a String(36).
    "too long a job id": Poison([], submitted("j" * 100), applies_on_sqlite=True),
    # PostgreSQL: DataError (bigint out of range); SQLite: OverflowError from the driver, both
    # from the owner's files.
    "a number out of range": Poison(
        [submitted("job-big")], outputs_saved("job-big", files=[{"path": "/out", "size": 2**70}])
    ),
    # MalformedEvent: the envelope refuses a time without its zone (folds compare times).
    "a naive timestamp": Poison([heartbeat("r1")], heartbeat("r1", naive=True)),
    # AttributeError: a list of strings where entries are objects.
    "an odd shape": Poison([submitted("job-odd")], outputs_saved("job-odd", skipped=["out"])),
    # KeyError: outputs of no attempt, which a read of the job's files could not place.
    "outputs of no attempt": Poison(
        [], encode(new_event(EventType.JOB_OUTPUTS_SAVED, "job-none", files=[]))
    ),
    # ValueError: an outcome from a newer producer.
    "an unknown outcome": Poison(
        [
            submitted("job-new"),
            encode(new_event(EventType.JOB_ASSIGNED, "job-new", attempt=1, runner="r1", gpus=[])),
        ],
        encode(new_event(EventType.JOB_FINISHED, "job-new", attempt=1, outcome="preempted")),
    ),
}


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    migrate(engine, "api")
    migrate(engine, "scheduler")
    yield engine
    engine.dispose()


def append_raw(settings: Settings, topology: Topology, *bodies: bytes) -> None:
    """Publish bodies as they are, in order, as a faulty producer would."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    channel = connection.channel()
    topology.declare(channel)
    channel.confirm_delivery()
    for body in bodies:
        channel.basic_publish("", topology.events_stream, body)
    connection.close()


class NoLiveHeartbeats:
    """Heartbeats heard off the log: none here, they come through the stream in these tests."""

    def take(self) -> list[Event]:
        return []


def api_projection(engine: sa.Engine, publisher: Publisher, settings: Settings) -> RunnerBoard:
    jobs = ApiProjection(engine, publisher, settings.response_exchange)
    return RunnerBoard(jobs, engine, NoLiveHeartbeats())


def rows(engine: sa.Engine, table: sa.Table) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(table)).all())


def job_ids(engine: sa.Engine) -> set[str]:
    return {row.job_id for row in rows(engine, schema.jobs)}


def stored_offset(engine: sa.Engine, offsets: sa.Table = schema.offsets) -> int | None:
    with engine.connect() as connection:
        return connection.execute(sa.select(offsets.c.position)).scalar_one_or_none()


@pytest.mark.parametrize("kind", POISONS)
def test_a_poison_event_is_set_aside_and_the_others_applied(
    settings, topology, engine, publisher, kind
):
    poison = POISONS[kind]
    bodies = [submitted("job-first"), *poison.before, poison.poison, submitted("job-last")]
    append_raw(settings, topology, *bodies)
    at = len(bodies) - 2  # the poison's offset in this test's fresh stream
    with consuming(settings, topology, engine, api_projection(engine, publisher, settings)):
        wait_until(lambda: stored_offset(engine) == len(bodies) - 1, what="offset past all")
    assert {"job-first", "job-last"} <= job_ids(engine)
    letters = rows(engine, schema.dead_letters)
    if poison.applies_on_sqlite and engine.dialect.name == "sqlite":
        assert letters == []
        return
    assert [(letter.position, letter.body) for letter in letters] == [(at, poison.poison)]
    assert letters[0].replay_requested_at is None


def test_an_integrity_error_of_one_event_is_set_aside(settings, topology, engine, publisher):
    """The scheduler's runners table keys on the runner: a heartbeat naming none violates it."""
    bodies = [heartbeat("r1"), heartbeat(None), submitted("job-after")]
    append_raw(settings, topology, *bodies)
    projection = SchedulerProjection(
        engine, publisher, EventFactory("scheduler"), runner_deadline=30.0, clock=utcnow
    )
    with consuming(settings, topology, engine, projection):
        wait_until(
            lambda: (stored_offset(engine, scheduler_schema.offsets) or -1) >= 2,
            what="the scheduler past all three",
        )
    assert [row.job_id for row in rows(engine, scheduler_schema.jobs)] == ["job-after"]
    letters = rows(engine, scheduler_schema.dead_letters)
    assert [(letter.position, letter.body) for letter in letters] == [(1, bodies[1])]
    assert "IntegrityError" in letters[0].error


class Decorated:
    """A real projection, with a twist added by a subclass."""

    def __init__(self, inner: Projection):
        self._inner = inner
        self.consumer, self.start_at = inner.consumer, inner.start_at
        self.offsets, self.dead_letters = inner.offsets, inner.dead_letters

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        self._inner.apply_batch(session, batch)

    def after_batch(self, caught_up: bool) -> None:
        self._inner.after_batch(caught_up)

    def tick(self) -> None:
        self._inner.tick()


class FailsOnce(Decorated):
    """A projection whose database fails once, as when its connection drops mid-batch."""

    def __init__(self, inner: Projection, fault: Exception):
        super().__init__(inner)
        self._fault: Exception | None = fault

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        fault, self._fault = self._fault, None
        if fault is not None:
            raise fault
        super().apply_batch(session, batch)


def test_a_fault_of_the_database_is_retried_not_dead_lettered(
    settings, topology, engine, publisher
):
    append_raw(settings, topology, submitted("job-1"), submitted("job-2"))
    lost = sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    projection = FailsOnce(api_projection(engine, publisher, settings), lost)
    with consuming(settings, topology, engine, projection):
        wait_until(lambda: job_ids(engine) == {"job-1", "job-2"}, what="both jobs, retried")
    assert rows(engine, schema.dead_letters) == []


class Refuses(Decorated):
    """A projection that cannot yet apply some jobs' events, until it is "upgraded"."""

    def __init__(self, inner: Projection, refused: set[str]):
        super().__init__(inner)
        self.refused = refused

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        for event, _ in batch:
            if event.job_id in self.refused:
                raise NotImplementedError(f"{event.type} of {event.job_id} not supported yet")
        super().apply_batch(session, batch)


def run_freight(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = freight(list(args))
    return code, capsys.readouterr().out


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, database_url: str) -> None:
    """The environment the operator's shell shares with the services."""
    monkeypatch.delenv("FREIGHT_DATABASE_URL", raising=False)
    monkeypatch.setenv("FREIGHT_HOME", str(settings.home))  # no other service's database
    monkeypatch.setenv("FREIGHT_API_DATABASE_URL", database_url)


def test_an_operator_lists_dead_letters_and_replays_them_after_an_upgrade(
    settings, topology, engine, publisher, operator_env, capsys
):
    append_raw(settings, topology, submitted("job-1"), submitted("job-2"), submitted("job-3"))
    projection = Refuses(api_projection(engine, publisher, settings), {"job-2"})
    with consuming(settings, topology, engine, projection):
        wait_until(lambda: stored_offset(engine) == 2, what="all three consumed")
        assert job_ids(engine) == {"job-1", "job-3"}

        code, out = run_freight(capsys, "dead-letters", "ls", "--json")
        assert code == 0
        [letter] = json.loads(out)
        assert (letter["service"], letter["position"]) == ("api", 1)
        assert (letter["event_type"], letter["job_id"]) == ("JobSubmitted", "job-2")
        assert "not supported yet" in letter["error"]

        # Replayed before the fix: it fails again, the new error is kept, the request cleared.
        with engine.begin() as db:
            db.execute(sa.update(schema.dead_letters).values(error="old"))
        assert run_freight(capsys, "dead-letters", "replay", "--service", "api", "--all")[0] == 0
        wait_until(
            lambda: rows(engine, schema.dead_letters)[0].error != "old", what="replayed, failed"
        )
        [kept] = rows(engine, schema.dead_letters)
        assert kept.replay_requested_at is None and "not supported yet" in kept.error

        projection.refused.clear()  # the upgrade
        code, out = run_freight(capsys, "dead-letters", "replay", "--service", "api", str(kept.id))
        assert code == 0 and f"api: asked to replay {kept.id}" in out
        wait_until(lambda: rows(engine, schema.dead_letters) == [], what="the replay applied")
        assert job_ids(engine) == {"job-1", "job-2", "job-3"}
    assert stored_offset(engine) == 2  # a replay never moves the offset


def test_replay_of_an_unknown_dead_letter_fails(settings, engine, operator_env, capsys):
    assert run_freight(capsys, "dead-letters", "replay", "--service", "api", "7")[0] == 1
    assert run_freight(capsys, "dead-letters", "replay", "7")[0] == 2  # ids are per service


def test_old_dead_letters_are_pruned(settings, topology, engine, publisher):
    append_raw(settings, topology, b"\xff not an event", submitted("job-1"))
    projection = api_projection(engine, publisher, settings)
    with consuming(settings, topology, engine, projection) as consumer:
        wait_until(lambda: consumer.dead_lettered == 1, what="the poison dead-lettered")
    assert len(rows(engine, schema.dead_letters)) == 1  # younger than the default retention

    # A consumer prunes when it starts, then once a minute.
    with consuming(settings, topology, engine, projection, dead_letter_retention=0.0):
        wait_until(lambda: rows(engine, schema.dead_letters) == [], what="its letter pruned")


def test_a_database_ahead_of_a_recreated_stream_refuses_to_run(
    settings, topology, engine, publisher
):
    append_raw(settings, topology, *[submitted(f"job-{n}") for n in range(3)])
    with consuming(settings, topology, engine, api_projection(engine, publisher, settings)):
        wait_until(lambda: stored_offset(engine) == 2, what="three events applied")

    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    connection.channel().queue_delete(topology.events_stream)
    connection.close()

    consumer = StreamConsumer(
        settings.amqp_url, topology, engine, api_projection(engine, publisher, settings)
    )
    error = run_until_raises(consumer)
    assert isinstance(error, LogBehindProjection)
    assert "up to offset 2" in str(error) and "ends at offset -1" in str(error)
    assert "restore the stream" in str(error)
