"""Usage per owner comes from the log alone: a rebuild, cut into other batches, gives the same
figures to the last digit."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from freight_server.services.api import schema
from freight_server.services.api.projection import ApiProjection
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventFactory, EventType
from tests.integration.consuming import consuming
from tests.waiting import wait_until

T0 = datetime(2026, 11, 1, tzinfo=UTC)
GPUS = [{"index": i, "uuid": f"GPU-{i}", "name": "Simulated GPU"} for i in range(2)]


def at(seconds: float) -> EventFactory:
    return EventFactory("test", clock=lambda: T0 + timedelta(seconds=seconds))


def run(job_id: str, owner: str, start: float, seconds: float, **spec) -> list[Event]:
    gpus = spec.pop("gpus", 0)
    return [
        at(start)(
            EventType.JOB_SUBMITTED, job_id, command="x", image="b", owner=owner, gpus=gpus, **spec
        ),
        at(start)(EventType.JOB_ASSIGNED, job_id, runner="r", attempt=1, gpus=GPUS[:gpus]),
        at(start + 0.25)(EventType.JOB_STARTED, job_id, runner="r", attempt=1),
        at(start + 0.25 + seconds)(
            EventType.JOB_FINISHED, job_id, runner="r", attempt=1, outcome="succeeded"
        ),
    ]


@pytest.fixture
def engines(tmp_path) -> Iterator[list[sa.Engine]]:
    engines = [create_engine(f"sqlite:///{tmp_path / f'api-{n}.db'}") for n in (1, 2)]
    for engine in engines:
        migrate(engine, "api")
    yield engines
    for engine in engines:
        engine.dispose()


def usage(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.select(schema.usage).order_by("owner"))]


def test_usage_is_a_fold_of_the_log_whatever_the_batches(settings, topology, publisher, engines):
    events = [
        *run("a1", "alice", 0, 90.5, gpus=2),
        *run("a2", "alice", 10, 1 / 3, cpus=0.5),
        *run("b1", "bob", 20, 7.125, gpus=1, cpus=4),
        at(30)(EventType.JOB_SUBMITTED, "b2", command="x", image="b", owner="bob"),
        at(31)(EventType.JOB_CANCEL_REQUESTED, "b2"),  # ended without running
    ]
    publisher.append(*events)
    for engine, batch in zip(engines, (500, 3), strict=True):
        projection = ApiProjection(engine, publisher, settings.response_exchange)
        with consuming(settings, topology, engine, projection, batch_size=batch):
            wait_until(lambda e=engine: len(usage(e)) == 2 and usage(e)[1][1] == 2)

    first, rebuilt = (usage(engine) for engine in engines)
    assert first == rebuilt
    by_owner = {row[0]: row[1:] for row in first}
    # jobs, run ms, GPU-ms, CPU-ms (one CPU for a job that asked for none)
    assert by_owner["alice"] == (2, 90_500 + 333, 2 * 90_500, 90_500 + 166)
    assert by_owner["bob"] == (2, 7_125, 7_125, 4 * 7_125)
