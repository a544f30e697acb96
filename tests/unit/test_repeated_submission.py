"""A retried submission (Idempotency-Key) can put a second JobSubmitted for the same job in the
log. The projections keep the first: one job counted, its first inputs referred to, the retry's
uploads let go."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.api import schema as api_schema
from freight_server.services.api.projection import ApiProjection
from freight_server.services.filestore import schema as filestore_schema
from freight_server.services.filestore.projection import FilestoreProjection
from freight_server.shared.consumer import Logged
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventFactory, EventType

new_event = EventFactory("api", clock=lambda: datetime(2030, 1, 1, tzinfo=UTC))
JOB = "6f1c2a4e-0000-5000-8000-000000000001"


def submitted(upload: str, digest: str) -> Event:
    files = [{"path": "/job/in.txt", "digest": digest, "size": 1, "upload": upload}]
    return new_event(
        EventType.JOB_SUBMITTED,
        JOB,
        command="echo hi",
        image="busybox",
        owner="alice",
        files=files,
        idempotency_key="k-1",
    )


def batches(*events: Event, together: bool) -> list[list[Logged]]:
    logged = [Logged(event, n) for n, event in enumerate(events)]
    return [logged] if together else [[one] for one in logged]


def engine_for(service: str, tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / service}.db")
    migrate(engine, service)
    yield engine
    engine.dispose()


@pytest.fixture
def api_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    yield from engine_for("api", tmp_path)


@pytest.fixture
def filestore_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    yield from engine_for("filestore", tmp_path)


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "two batches"])
def test_the_api_counts_and_keeps_the_first(api_engine, together):
    projection = ApiProjection(api_engine, publisher=None, response_exchange="x")  # type: ignore[arg-type]
    first, retry = submitted("u1", "sha256:a"), submitted("u2", "sha256:b")
    for batch in batches(first, retry, together=together):
        with Session(api_engine) as session, session.begin():
            projection.apply_batch(session, batch)
    with api_engine.connect() as connection:
        counts = connection.execute(sa.select(api_schema.job_counts)).all()
        (view,) = connection.execute(sa.select(api_schema.jobs.c.view)).scalars()
        kept = connection.execute(sa.select(sa.func.count()).select_from(api_schema.events))
    assert [(c.owner, c.status, c.jobs) for c in counts] == [("alice", "QUEUED", 1)]
    assert [f["upload"] for f in view["files"]] == ["u1"]
    assert kept.scalar_one() == 2  # both are history all the same


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "two batches"])
def test_the_filestore_refers_to_the_first_inputs_and_lets_the_retrys_go(
    filestore_engine, together
):
    expires = datetime(2030, 1, 2, tzinfo=UTC) + timedelta(hours=1)
    with filestore_engine.begin() as connection:
        connection.execute(
            filestore_schema.holds.insert(),
            [
                {"upload": "u1", "digest": "sha256:a", "expires_at": expires},
                {"upload": "u2", "digest": "sha256:b", "expires_at": expires},
            ],
        )
    projection = FilestoreProjection(
        retention=None,  # type: ignore[arg-type]
        log_writer=None,
        new_event=EventFactory("filestore"),
        collect_every=60,
    )
    for batch in batches(
        submitted("u1", "sha256:a"), submitted("u2", "sha256:b"), together=together
    ):
        with Session(filestore_engine) as session, session.begin():
            projection.apply_batch(session, batch)
    with filestore_engine.connect() as connection:
        refs = connection.execute(sa.select(filestore_schema.refs)).all()
        holds = connection.execute(sa.select(filestore_schema.holds)).all()
    assert [(r.job_id, r.digest) for r in refs] == [(JOB, "sha256:a")]
    assert holds == []
