"""When a blob may go: no upload holds it any more, and every job that refers to it ended more than
FREIGHT_FILE_RETENTION ago. Deciding and deleting happen under the store's lock, so an upload
committing the same bytes at that moment either keeps the blob or stores it afresh. A pack goes
with the last of its blobs. A job's logs go at the same age."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy as sa

from freight_server.services.filestore import schema
from freight_server.services.filestore.blobs import BlobStore
from freight_server.services.filestore.logs import LogStore
from freight_server.shared.db import in_slices

log = logging.getLogger(__name__)

BATCH = 500


class Retention:
    def __init__(
        self,
        engine: sa.Engine,
        store: BlobStore,
        logs: LogStore,
        lock: threading.RLock,
        retention: timedelta,
        clock: Callable[[], datetime],
    ):
        self._engine = engine
        self._store = store
        self._logs = logs
        self.lock = lock
        self._retention = retention
        self._clock = clock
        # Set once the projection has replayed the log: before that a job's references may not
        # be known yet, and nothing may be deleted on their account.
        self.caught_up = threading.Event()

    def collect(self, digests: Collection[str] | None = None) -> int:
        """Delete the blobs nothing keeps (only among `digests` if given); returns how many."""
        if not self.caught_up.is_set():
            return 0
        deleted = 0
        while True:
            # The records go first, the bytes once that is committed (still under the lock):
            # a failed commit leaves them both. A crash in between leaves bytes no record names
            # (a pack is deleted at the next start), never a record of bytes that are gone.
            with self.lock:
                with self._engine.begin() as connection:
                    now = self._clock()
                    doomed = collectable(connection, now, now - self._retention, digests)
                    if doomed:
                        connection.execute(
                            schema.blobs.delete().where(
                                schema.blobs.c.digest.in_([digest for digest, _ in doomed])
                            )
                        )
                    emptied = _emptied(connection, {p for _, p in doomed if p is not None})
                    for holds in (schema.holds, schema.batch_holds):
                        connection.execute(holds.delete().where(holds.c.expires_at <= now))
                for digest, pack in doomed:
                    if pack is None:
                        self._store.delete(digest)
                for pack in emptied:
                    self._store.delete_pack(pack)
            deleted += len(doomed)
            if len(doomed) < BATCH:
                break
        if deleted:
            log.info("deleted %d blobs no job needs any more", deleted)
        if digests is None:
            self._collect_logs()
        return deleted

    def delete_orphan_packs(self) -> int:
        """At start-up: packs written in place whose blobs were never recorded (the process
        died between the two). Returns how many went."""
        with self.lock, self._engine.connect() as connection:
            on_disk = self._store.pack_names()
            recorded: set[str] = set()
            for some in in_slices(on_disk):
                recorded.update(
                    connection.execute(
                        sa.select(schema.blobs.c.pack)
                        .distinct()
                        .where(schema.blobs.c.pack.in_(some))
                    ).scalars()
                )
        orphans = set(on_disk) - recorded
        for pack in orphans:
            self._store.delete_pack(pack)
        return len(orphans)

    def _collect_logs(self) -> None:
        jobs = schema.jobs
        now = self._clock()
        ended_before = now - self._retention
        with self._engine.begin() as connection:
            expired = list(
                connection.execute(
                    sa.select(jobs.c.job_id)
                    .where(jobs.c.ended_at < ended_before, jobs.c.logs_deleted_at.is_(None))
                    .limit(BATCH)
                ).scalars()
            )
            for job_id in expired:
                self._logs.delete(job_id)
            if expired:
                # Past its retention a job keeps nothing: its rows go with its logs, so that
                # these tables hold the jobs of one retention period, not of all time.
                connection.execute(schema.refs.delete().where(schema.refs.c.job_id.in_(expired)))
                connection.execute(jobs.delete().where(jobs.c.job_id.in_(expired)))

    def release(self, uploads: Collection[str]) -> int:
        """End these uploads' holds (their submission failed) and delete what they alone kept."""
        if not uploads:
            return 0
        with self.lock, self._engine.begin() as connection:
            digests = (
                connection.execute(
                    sa.select(schema.holds.c.digest).where(schema.holds.c.upload.in_(uploads))
                )
                .scalars()
                .all()
            )
            for holds in (schema.holds, schema.batch_holds):
                connection.execute(holds.delete().where(holds.c.upload.in_(uploads)))
        # A batch's blobs (which never come from a failed submission) go at the next sweep.
        return self.collect(set(digests)) if digests else 0


def _emptied(connection: sa.Connection, packs: set[str]) -> set[str]:
    """Of these packs, those none of whose blobs is left."""
    if not packs:
        return set()
    blobs = schema.blobs
    left = connection.execute(
        sa.select(blobs.c.pack).distinct().where(blobs.c.pack.in_(sorted(packs)))
    ).scalars()
    return packs - set(left)


def collectable(
    connection: sa.Connection,
    now: datetime,
    ended_before: datetime,
    digests: Collection[str] | None = None,
) -> list[tuple[str, str | None]]:
    """Blobs that may go, each with its pack if it is in one."""
    blobs, holds, refs, jobs = schema.blobs, schema.holds, schema.refs, schema.jobs
    batches = schema.batch_holds
    held = sa.or_(
        sa.exists().where(holds.c.digest == blobs.c.digest, holds.c.expires_at > now),
        sa.exists().where(batches.c.upload == blobs.c.held_by, batches.c.expires_at > now),
    )
    needed = sa.exists().where(
        refs.c.digest == blobs.c.digest,
        jobs.c.job_id == refs.c.job_id,
        sa.or_(jobs.c.ended_at.is_(None), jobs.c.ended_at > ended_before),
    )
    query = sa.select(blobs.c.digest, blobs.c.pack).where(~held, ~needed)
    if digests is not None:
        query = query.where(blobs.c.digest.in_(list(digests)))
    return [(row.digest, row.pack) for row in connection.execute(query.limit(BATCH))]
