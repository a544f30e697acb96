"""Each owner's files across their jobs (freight_server/services/api/owner_files.py), as the
API's projection keeps them: the newest version wins, a deletion is a version, other owners never
mix in. The same events applied in one batch or one at a time, and indexed afresh from the
history (as the migration does), must leave the same rows, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.api import schema
from freight_server.services.api.owner_files import DELETED, OwnerFiles, record_history
from freight_server.services.api.projection import ApiProjection
from freight_server.shared.consumer import Logged
from freight_server.shared.events import Event, EventFactory, EventType

new_event = EventFactory("test", clock=lambda: datetime(2030, 1, 1, tzinfo=UTC))


def job(n: int) -> str:
    return f"6f1c2a4e-0000-5000-8000-{n:012d}"


def submitted(n: int, owner: str, *inputs: str) -> Event:
    files = [{"path": p, "digest": f"sha256:in{n}", "size": 1, "upload": f"u{n}"} for p in inputs]
    return new_event(
        EventType.JOB_SUBMITTED, job(n), command="true", image="busybox", owner=owner, files=files
    )


def saved(n: int, *files: dict[str, Any], deleted: tuple[str, ...] = (), skipped=()) -> Event:
    stdout = {"path": "/.freight/stdout", "type": "file", "size": 0, "digest": "sha256:e"}
    return new_event(
        EventType.JOB_OUTPUTS_SAVED,
        job(n),
        runner="r1",
        attempt=1,
        files=[stdout, *files],
        skipped=list(skipped),
        deleted=list(deleted),
        saved_bytes=0,
        error=None,
    )


def a_file(path: str, digest: str) -> dict[str, Any]:
    return {"path": path, "type": "file", "size": 3, "mode": "0644", "digest": digest}


def a_dir(path: str) -> dict[str, Any]:
    return {"path": path, "type": "dir", "size": 0, "mode": "0755"}


@pytest.fixture
def engine(api_engine: sa.Engine) -> sa.Engine:
    return api_engine


def project(engine: sa.Engine, events: list[Event], together: bool, start: int = 0) -> OwnerFiles:
    """Apply the events as the log at positions `start`, `start + 1`, ..."""
    projection = ApiProjection(engine, publisher=None, response_exchange="x")  # type: ignore[arg-type]
    logged = [Logged(event, n) for n, event in enumerate(events, start)]
    for batch in [logged] if together else [[one] for one in logged]:
        with Session(engine) as session, session.begin():
            projection.apply_batch(session, batch)
    return OwnerFiles(engine)


def names(files: OwnerFiles, owner: str, path: str) -> dict[str, tuple[str, str]]:
    """The listing: name → (type, the job whose version it is)."""
    return {v.name: (v.type, v.job_id) for v in files.children(owner, path).entries}


def owner_rows(engine: sa.Engine) -> set[tuple[Any, ...]]:
    with engine.connect() as connection:
        return {tuple(row) for row in connection.execute(sa.select(schema.owner_files))}


TWO_WRITERS = [
    submitted(1, "alice", "/tmp/in.txt"),
    submitted(2, "alice"),
    submitted(3, "bob"),
    saved(1, a_dir("/tmp"), a_file("/tmp/out.txt", "sha256:one"), a_file("/tmp/a.txt", "sha256:a")),
    saved(3, a_dir("/tmp"), a_file("/tmp/out.txt", "sha256:bobs")),
    saved(2, a_file("/tmp/out.txt", "sha256:two")),  # /tmp not listed: implied
]


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "one at a time"])
def test_the_newest_version_wins_and_owners_stay_apart(engine, together):
    files = project(engine, TWO_WRITERS, together)

    out = files.version("alice", "/tmp/out.txt")
    assert out is not None and (out.digest, out.job_id) == ("sha256:two", job(2))
    assert names(files, "alice", "/tmp") == {
        "in.txt": ("file", job(1)),
        "a.txt": ("file", job(1)),
        "out.txt": ("file", job(2)),
    }
    # Job 2 did not list /tmp: implied, it leaves job 1's own entry of the directory alone.
    assert names(files, "alice", "/") == {"tmp": ("dir", job(1))}
    theirs = files.version("bob", "/tmp/out.txt")
    assert theirs is not None and theirs.digest == "sha256:bobs"
    assert files.version("carol", "/tmp/out.txt") is None
    assert files.version("alice", "/.freight/stdout") is None  # each job's own: ask with job_id


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "one at a time"])
def test_a_deletion_hides_older_versions_and_a_removed_directory_its_contents(engine, together):
    events = [
        *TWO_WRITERS,
        submitted(4, "alice"),
        saved(4, a_dir("/tmp"), deleted=("/tmp/a.txt", "/etc/motd")),
        submitted(5, "alice"),
        saved(5, a_dir("/"), deleted=("/tmp",)),
        submitted(6, "alice"),
        saved(6, a_file("/tmp/new.txt", "sha256:new")),
        submitted(7, "alice"),
        saved(7, skipped=[{"path": "/tmp/new.txt", "size": 9, "reason": "over the limit"}]),
    ]
    files = project(engine, events, together)

    assert names(files, "alice", "/tmp") == {}  # new.txt's newest version was not saved
    skipped = files.version("alice", "/tmp/new.txt")
    assert skipped is not None and skipped.skipped == "over the limit"
    for gone in ("/tmp/out.txt", "/tmp/in.txt", "/tmp/a.txt"):
        assert files.version("alice", gone) is None, gone  # went with /tmp
    assert files.version("alice", "/etc/motd") is None  # deleting the image's file hides nothing
    bobs = files.version("bob", "/tmp/out.txt")
    assert bobs is not None and bobs.type != DELETED


def test_a_deletion_answers_for_the_path_until_a_newer_version(engine):
    deleted = [*TWO_WRITERS, submitted(4, "alice"), saved(4, deleted=("/tmp/out.txt",))]
    files = project(engine, deleted, together=False)
    version = files.version("alice", "/tmp/out.txt")
    assert version is not None and (version.type, version.job_id) == (DELETED, job(4))
    assert "out.txt" not in names(files, "alice", "/tmp")

    rewritten = [*deleted, submitted(5, "alice"), saved(5, a_file("/tmp/out.txt", "sha256:3"))]
    files = project(engine, rewritten[len(deleted) :], together=True, start=len(deleted))
    version = files.version("alice", "/tmp/out.txt")
    assert version is not None and (version.type, version.job_id) == ("file", job(5))


def test_the_history_indexed_afresh_gives_the_same_rows(engine):
    project(engine, TWO_WRITERS, together=False)
    projected = owner_rows(engine)
    with engine.begin() as connection:
        connection.execute(schema.owner_files.delete())
        record_history(connection, window=2)  # windows that split the jobs from their outputs
    assert projected and owner_rows(engine) == projected
