"""One owner's files across all their jobs: what `GET /files?path=/abs` without `job_id` reads.

In the original API a caller's jobs share one file system: a job writes /tmp/out.png and the
caller downloads `/files?path=/tmp/out.png`. Here every job runs in a container of its own, so
that file system is made of what the jobs saved. `api_owner_files` keeps, for each owner and
path, the newest version, written by the API's projection as it reads the log:

- A version is an input (JobSubmitted's `files`, the first submission's) or what an ended job
  created, changed, deleted or could not save (JobOutputsSaved).
- The newest is the one later in the log: the order every reader agrees on, whatever the
  clocks of the API and the runners said. A job that ends later wins, as the last writer would.
- A deletion is a version too: the path then answers 404 naming the job. It is recorded only
  over a path some version has (deleting a file of the image hides nothing).
- A path that stops being a directory (deleted, or now a file) takes the older versions beneath
  it along; the parents of a path are directories, implied where the job did not list them.
- `/.freight` (a job's stdout and stderr) is each job's own: ask for it with `job_id`.

Every rule compares log positions, never the order events are applied in: a dead letter
replayed late (`freight dead-letters replay`) changes only what it would have changed in order.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from freight_server.services.api import schema
from freight_server.shared.consumer import Logged
from freight_server.shared.db import execute_many, in_slices
from freight_server.shared.events import Event, EventType, decode
from freight_server.shared.job_paths import OUTPUT_DIR, parent_of
from freight_server.shared.jobs import JobView
from freight_server.shared.views import ViewChange

DELETED = "deleted"  # the type of a version that says a job deleted the path
MAX_LISTING = 10_000
_KEYS_PER_QUERY = 500  # bound the parameters of one IN (...), whatever the database


def path_key(path: str) -> str:
    """Paths may be 4096 bytes, more than an index entry holds: rows are found by its sha1."""
    return hashlib.sha1(path.encode(errors="surrogateescape")).hexdigest()


@lru_cache(maxsize=1024)
def parent_key(path: str) -> str:
    """The key of the path's directory: the same for the thousands of files a job wrote in one."""
    return path_key(parent_of(path))


@dataclass(frozen=True)
class Version:
    """One job's version of one path, at the log position that made it."""

    path: str
    job_id: str
    position: int
    type: str  # "file", "dir", "symlink", "other", or DELETED
    size: int = 0
    mode: str = "0644"
    modified: str | None = None
    digest: str | None = None
    target: str | None = None
    skipped: str | None = None  # why the job did not save it
    implied: bool = False  # a directory known only as the parent of what the job listed

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def replaces(self, older: Version | None) -> bool:
        if self.implied:  # says only "a directory", never over one, whatever its position
            return older is None or (older.type != "dir" and older.position < self.position)
        if self.type == DELETED:
            return older is not None and older.type != DELETED and older.position < self.position
        return older is None or older.position < self.position or older.implied


# -- versions of the log's events ---------------------------------------------------------------


def inputs_of(job: JobView, position: int) -> list[Version]:
    """A new job's uploads, as the runner puts them in place: 0644, its submission as mtime."""
    made = job.created_at.isoformat()
    listed = [
        Version(
            str(f["path"]),
            job.job_id,
            position,
            "file",
            size=int(f.get("size") or 0),
            modified=made,
            digest=f.get("digest"),
        )
        for f in job.files
    ]
    return with_parents(listed, made)


def outputs_of(event: Event, position: int) -> list[Version]:
    """What an attempt saved, could not save (`skipped`) and deleted."""
    job_id, data = str(event.job_id), event.data
    by_path: dict[str, Version] = {}
    for path in data.get("deleted") or ():
        by_path[str(path)] = Version(str(path), job_id, position, DELETED)
    for entry in [*(data.get("skipped") or ()), *(data.get("files") or ())]:
        version = _saved(job_id, position, entry)
        by_path[version.path] = version
    listed = [v for v in by_path.values() if not _per_job(v.path)]
    return with_parents(listed, event.occurred_at.isoformat())


def _saved(job_id: str, position: int, entry: Mapping[str, Any]) -> Version:
    skipped = entry.get("reason")
    return Version(
        str(entry["path"]),
        job_id,
        position,
        str(entry.get("type") or "file"),
        size=int(entry.get("size") or 0),
        mode=str(entry.get("mode") or "0644"),
        modified=entry.get("modified"),
        digest=entry.get("digest"),
        target=entry.get("target"),
        skipped=str(skipped or "not saved") if "reason" in entry else None,
    )


def _per_job(path: str) -> bool:
    return path == OUTPUT_DIR or path.startswith(OUTPUT_DIR + "/")


def with_parents(listed: list[Version], modified: str) -> list[Version]:
    """The versions, then a directory for each parent none of them names."""
    named = {v.path for v in listed}
    implied: dict[str, Version] = {}
    for version in listed:
        parent = parent_of(version.path)
        while parent != "/" and parent not in named and parent not in implied:
            implied[parent] = replace(
                version,
                path=parent,
                type="dir",
                size=0,
                mode="0755",
                modified=modified,
                digest=None,
                target=None,
                skipped=None,
                implied=True,
            )
            parent = parent_of(parent)
    return [*listed, *implied.values()]


# -- merging one owner's versions ---------------------------------------------------------------


class OwnerTree:
    """One owner's paths as a batch leaves them: the stored versions, then the batch's, in log
    order. Pure: what to write is read off `current` and `cleared` afterwards."""

    def __init__(self, stored: Mapping[str, Version]):
        self.current: dict[str, Version] = dict(stored)
        # Directories that stopped being ones, and the position: older rows beneath them go.
        self.cleared: dict[str, int] = {}

    def add(self, version: Version) -> None:
        older = self.current.get(version.path)
        if not version.replaces(older):
            return
        if older is not None and older.type == "dir" and version.type != "dir":
            self._clear_beneath(version.path, version.position)
        self.current[version.path] = version

    def _clear_beneath(self, path: str, position: int) -> None:
        # Rare (a job deleting or overwriting a directory earlier jobs wrote into), so a scan.
        prefix = path.rstrip("/") + "/"
        for beneath, version in list(self.current.items()):
            if beneath.startswith(prefix) and version.position < position:
                del self.current[beneath]
        self.cleared[path] = max(position, self.cleared.get(path, position))


def record_versions(
    session: Session | sa.Connection, owner: str, versions: Sequence[Version]
) -> None:
    """Merge the versions (in log order) into the owner's rows."""
    if not versions:
        return
    keys = {v.path: path_key(v.path) for v in versions}
    stored = _stored(session, owner, keys)
    tree = OwnerTree(stored)
    for version in sorted(versions, key=_log_order):
        tree.add(version)
    _delete_beneath(session, owner, tree.cleared)
    changed = [v for path, v in tree.current.items() if v is not stored.get(path)]
    # Written over the stored row of the same path, if any, with one executemany: a quarter
    # quicker than deleting the rows and inserting them again, for the thousands of a job's
    # outputs, and twice as quick as updating them.
    connection = session.connection() if isinstance(session, Session) else session
    rows = [_row(owner, v, keys[v.path]) for v in changed]
    execute_many(connection, _written_over(connection.dialect.name), rows)


_log_order = attrgetter("position", "implied")


# Built once: statements built again for every batch cost the projection more than running them.
_rows = schema.owner_files
_STORED = sa.select(_rows.c.path, _rows.c.job_id, _rows.c.position, _rows.c.type).where(
    _rows.c.owner == sa.bindparam("who"),
    _rows.c.path_key.in_(sa.bindparam("keys", expanding=True)),
)
_OWNERS = sa.select(schema.jobs.c.job_id, schema.jobs.c.owner).where(
    schema.jobs.c.job_id.in_(sa.bindparam("ids", expanding=True))
)


@cache
def _written_over(dialect: str) -> sa.Insert:
    """An insert that writes over the row of the same owner and path (SQLite and PostgreSQL
    say it alike)."""
    inserting = sqlite.insert(_rows) if dialect == "sqlite" else postgresql.insert(_rows)
    return inserting.on_conflict_do_update(
        index_elements=[_rows.c.owner, _rows.c.path_key],
        set_={
            column.name: inserting.excluded[column.name]
            for column in _rows.columns
            if column.name not in ("owner", "path_key")
        },
    )


def _stored(
    session: Session | sa.Connection, owner: str, keys: Mapping[str, str]
) -> dict[str, Version]:
    """The owner's stored versions of these paths (path → its key), as much of each as merging
    needs: which job and position made it, and its type. Only what the batch put in their
    place is written, so the rest is never needed."""
    found: dict[str, Version] = {}
    for some in in_slices(list(keys.values()), _KEYS_PER_QUERY):
        rows = session.execute(_STORED, {"who": owner, "keys": some})
        found.update((path, Version(path, job, at, kind)) for path, job, at, kind in rows)
    return found


def _delete_beneath(
    session: Session | sa.Connection, owner: str, cleared: Mapping[str, int]
) -> None:
    """Delete the stored rows beneath each directory older than its clearing, a level at a time
    (by `parent_key`)."""
    table = schema.owner_files
    for root, position in cleared.items():
        level = [path_key(root)]
        while level:
            below: list[str] = []
            for keys in in_slices(level, _KEYS_PER_QUERY):
                where = (
                    table.c.owner == owner,
                    table.c.parent_key.in_(keys),
                    table.c.position < position,
                )
                below += session.execute(sa.select(table.c.path_key).where(*where)).scalars()
                session.execute(table.delete().where(*where))
            level = below


def _row(owner: str, version: Version, key: str) -> dict[str, Any]:
    return {
        "owner": owner,
        "path_key": key,
        "parent_key": parent_key(version.path),
        "path": version.path,
        "name": version.name,
        "job_id": version.job_id,
        "position": version.position,
        "type": version.type,
        "size": version.size,
        "mode": version.mode,
        "modified": version.modified,
        "digest": version.digest,
        "target": version.target,
        "skipped": version.skipped,
    }


def version_of(row: Any) -> Version:
    return Version(
        row.path,
        row.job_id,
        row.position,
        row.type,
        row.size,
        row.mode,
        row.modified,
        row.digest,
        row.target,
        row.skipped,
    )


# -- the projection's side ----------------------------------------------------------------------


def record_owner_files(
    session: Session, fresh: Sequence[Logged], changes: Sequence[ViewChange]
) -> None:
    """Apply a batch: the new jobs' inputs and every JobOutputsSaved, by owner."""
    by_owner: dict[str, list[Version]] = {}
    for change in changes:
        if change.before is None:
            by_owner.setdefault(change.after.owner, []).extend(
                inputs_of(change.after, change.position)
            )
    saved = [(e, p) for e, p in fresh if e.type == EventType.JOB_OUTPUTS_SAVED and e.job_id]
    # A job's owner never changes: the batch's own views tell most (a job's outputs come with
    # its end), the table the rest.
    owners = {c.after.job_id: c.after.owner for c in changes}
    owners |= _owners(session, {str(event.job_id) for event, _ in saved} - owners.keys())
    for event, position in saved:
        owner = owners.get(str(event.job_id))
        if owner is not None:  # outputs of a job never submitted belong to nobody
            by_owner.setdefault(owner, []).extend(outputs_of(event, position))
    for owner, versions in by_owner.items():
        record_versions(session, owner, versions)


def _owners(session: Session | sa.Connection, job_ids: set[str]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for keys in in_slices(sorted(job_ids), _KEYS_PER_QUERY):
        owners.update((row.job_id, row.owner) for row in session.execute(_OWNERS, {"ids": keys}))
    return owners


def record_history(connection: sa.Connection, window: int = 5_000) -> None:
    """Index what the API projected before `api_owner_files` existed (its migration runs this),
    in log order, as the projection would have: a window of log positions at a time."""
    jobs, events = schema.jobs, schema.events
    # One scan for where the outputs are (no index on type), then their bodies by key.
    saved = connection.execute(
        sa.select(events.c.position, events.c.event_id)
        .where(events.c.type == EventType.JOB_OUTPUTS_SAVED)
        .order_by(events.c.position)
    ).all()
    positions = [row.position for row in saved]
    last = connection.execute(sa.select(sa.func.max(jobs.c.position))).scalar()
    end = max([last or 0, *positions[-1:]])
    for start in range(0, end + 1, window):
        span = (start, start + window - 1)
        first, past = bisect_left(positions, span[0]), bisect_right(positions, span[1])
        in_span = [row.event_id for row in saved[first:past]]
        by_owner: dict[str, list[Version]] = {}
        for row in connection.execute(
            sa.select(jobs.c.owner, jobs.c.position, jobs.c.view).where(
                jobs.c.position.between(*span)
            )
        ):
            versions = inputs_of(JobView.from_dict(row.view), row.position)
            by_owner.setdefault(row.owner, []).extend(versions)
        for ids in in_slices(in_span, _KEYS_PER_QUERY):
            for row in connection.execute(
                sa.select(jobs.c.owner, events.c.position, events.c.body)
                .join(jobs, jobs.c.job_id == events.c.job_id)
                .where(events.c.event_id.in_(ids))
            ):
                event = decode(json.dumps(row.body).encode())
                by_owner.setdefault(row.owner, []).extend(outputs_of(event, row.position))
        for owner, versions in by_owner.items():
            record_versions(connection, owner, versions)


# -- reads ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    entries: list[Version]
    truncated: bool


class OwnerFiles:
    """Reads of `api_owner_files`."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def version(self, owner: str, path: str) -> Version | None:
        table = schema.owner_files
        with self._engine.connect() as connection:
            row = connection.execute(
                sa.select(table).where(table.c.owner == owner, table.c.path_key == path_key(path))
            ).first()
        return version_of(row) if row is not None else None

    def children(self, owner: str, path: str) -> Listing:
        """The directory's entries, by name: what is there now (no deletions, nothing skipped)."""
        table = schema.owner_files
        with self._engine.connect() as connection:
            rows = connection.execute(
                sa.select(table)
                .where(
                    table.c.owner == owner,
                    table.c.parent_key == path_key(path),
                    table.c.type != DELETED,
                    table.c.skipped.is_(None),
                )
                .order_by(table.c.name)
                .limit(MAX_LISTING + 1)
            ).all()
        entries = [version_of(r) for r in rows if parent_of(r.path) == path]  # not a collision
        return Listing(entries[:MAX_LISTING], truncated=len(rows) > MAX_LISTING)
