"""An ended attempt's files, read from its JobOutputsSaved as the API keeps it (`api_events`),
on SQLite and PostgreSQL: what `GET /jobs/{id}/files` and TES outputs list."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command

from freight_server.services.api import schema
from freight_server.services.api.saved_files import OutputStore, SavedEntry
from freight_server.shared.db import alembic_config, migrate
from freight_server.shared.events import EventFactory, EventType

new_event = EventFactory("test")


@pytest.fixture
def engine(api_engine: sa.Engine) -> sa.Engine:
    return api_engine


def keep_saved(engine: sa.Engine, job_id: str, position: int, attempt: int, **data) -> None:
    """A JobOutputsSaved as the API's projection keeps it."""
    event = new_event(EventType.JOB_OUTPUTS_SAVED, job_id, attempt=attempt, **data)
    with engine.begin() as connection:
        connection.execute(
            schema.events.insert(),
            {
                "event_id": event.event_id,
                "position": position,
                "job_id": job_id,
                "type": event.type,
                "occurred_at": event.occurred_at,
                "body": event.to_dict(),
            },
        )


def listed(path: str, kind: str = "file", size: int = 1, **more) -> dict:
    return {"path": path, "type": kind, "size": size, "mode": "0644", "digest": None, **more}


def entry(outputs: OutputStore, job_id: str, attempt: int, path: str) -> SavedEntry | None:
    manifest = outputs.manifest(job_id, attempt)
    return manifest.entry(path) if manifest is not None else None


def children(outputs: OutputStore, job_id: str, attempt: int, path: str) -> list[SavedEntry]:
    manifest = outputs.manifest(job_id, attempt)
    return manifest.children(path) if manifest is not None else []


def saved_any(outputs: OutputStore, job_id: str, attempt: int) -> bool:
    manifest = outputs.manifest(job_id, attempt)
    return manifest is not None and len(manifest) > 0


def test_each_attempt_lists_what_it_saved_skipped_apart_its_latest_save_winning(engine):
    outputs = OutputStore(engine)
    assert outputs.manifest("job-1", 1) is None and not saved_any(outputs, "job-1", 1)

    keep_saved(engine, "job-1", 1, 1, files=[listed("/job/old")])
    keep_saved(
        engine,
        "job-1",
        2,
        2,
        files=[listed("/job", "dir"), listed("/job/b"), listed("/job/a"), listed("/job/d/x")],
        skipped=[{"path": "/job/huge", "size": 9, "reason": "over FREIGHT_MAX_OUTPUT_BYTES"}],
    )
    assert [e.path for e in children(outputs, "job-1", 1, "/job")] == ["/job/old"]
    assert [e.name for e in children(outputs, "job-1", 2, "/job")] == ["a", "b"]
    assert [e.path for e in children(outputs, "job-1", 2, "/job/d")] == ["/job/d/x"]
    skipped = entry(outputs, "job-1", 2, "/job/huge")
    assert skipped is not None and skipped.skipped == "over FREIGHT_MAX_OUTPUT_BYTES"
    assert entry(outputs, "job-1", 2, "/job/old") is None

    # The same attempt saved again (a runner that saved once more after a restart): the later
    # save is what it saved.
    keep_saved(engine, "job-1", 3, 2, files=[listed("/job/c")])
    assert [e.name for e in children(outputs, "job-1", 2, "/job")] == ["c"]
    assert saved_any(outputs, "job-1", 2) and not saved_any(outputs, "job-2", 1)


def test_manifests_past_the_cache_are_read_again(engine):
    outputs = OutputStore(engine, cached_entries=5, cached_manifests=3)
    for n in range(4):
        files = [listed(f"/job/{n}/{i}") for i in range(2)]
        keep_saved(engine, f"job-{n}", n, 1, files=files)
    for n in range(4, 10):  # nothing saved, yet each counts
        keep_saved(engine, f"job-{n}", n, 1, deleted=["/tmp/x"])
    for _ in range(2):
        for n in range(4):
            names = [e.name for e in children(outputs, f"job-{n}", 1, f"/job/{n}")]
            assert names == ["0", "1"]
        for n in range(4, 10):
            assert not saved_any(outputs, f"job-{n}", 1)
    assert len(outputs._cache) <= 3


def test_an_event_that_cannot_be_read_is_read_past(engine):
    keep_saved(engine, "job-1", 1, 1, files=[listed("/job/a")])
    keep_saved(engine, "job-1", 2, 2, files=["not an entry"])  # kept before it was refused
    outputs = OutputStore(engine)
    assert [e.name for e in children(outputs, "job-1", 1, "/job")] == ["a"]
    assert outputs.manifest("job-1", 2) is None


def test_going_back_to_the_table_of_rows_fills_it_from_the_events(engine):
    keep_saved(
        engine,
        "job-1",
        1,
        1,
        files=[listed("/job/out", size=7)],
        skipped=[{"path": "/job/big", "size": 9, "reason": "too big"}],
    )
    with engine.begin() as connection:
        command.downgrade(alembic_config("api", connection), "api_0008")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT path, size, skipped FROM api_job_files ORDER BY path")
            ).all()
        assert [tuple(row) for row in rows] == [("/job/big", 9, "too big"), ("/job/out", 7, None)]
    finally:
        migrate(engine, "api")
