"""The filestore's projection of the log: which jobs refer to which blobs (their inputs from
JobSubmitted, their outputs from JobOutputsSaved) and when each job ended. Retention reads it.

Deleting waits until the filestore has read back its own FilestoreStarted: by then it has
replayed everything before it, so no blob goes for want of a reference it has not read yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from services.filestore import schema
from services.filestore.retention import Retention
from shared.bus import BrokerUnavailable
from shared.consumer import FoldsEachEvent
from shared.events import Event, EventFactory, EventType
from shared.jobs import JobView, evolve

log = logging.getLogger(__name__)


class FilestoreProjection(FoldsEachEvent):
    consumer = "filestore"
    start_at = "first"
    offsets = schema.offsets
    dead_letters = schema.dead_letters

    def __init__(
        self,
        retention: Retention,
        log_writer: Any,
        new_event: EventFactory,
        collect_every: float,
    ):
        self._retention = retention
        self._log = log_writer
        self._new_event = new_event
        self._collect_every = collect_every
        self._next_collection = 0.0
        self._marker: str | None = None

    def apply(self, session: Session, event: Event, position: int) -> None:
        if event.event_id == self._marker:
            self._retention.caught_up.set()
            log.info("filestore caught up with the log; retention is on")
        if event.job_id is None:
            return
        if event.type in (EventType.JOB_SUBMITTED, EventType.JOB_OUTPUTS_SAVED):
            self._refer(session, event.job_id, event.data.get("files") or ())
        self._fold(session, event)

    def _refer(self, session: Session, job_id: str, files: Iterable[Mapping[str, Any]]) -> None:
        """The job refers to these blobs: they are kept for it, and the uploads' holds, having
        served their purpose, end."""
        refs, files = schema.refs, list(files)
        uploads = [str(f["upload"]) for f in files if f.get("upload")]
        if uploads:
            session.execute(schema.holds.delete().where(schema.holds.c.upload.in_(uploads)))
        digests = {f["digest"] for f in files if f.get("digest")}
        if not digests:
            return
        known = set(
            session.execute(
                sa.select(refs.c.digest).where(refs.c.job_id == job_id, refs.c.digest.in_(digests))
            ).scalars()
        )
        for digest in sorted(digests - known):
            session.execute(refs.insert().values(job_id=job_id, digest=digest))

    def _fold(self, session: Session, event: Event) -> None:
        jobs = schema.jobs
        row = session.execute(sa.select(jobs.c.view).where(jobs.c.job_id == event.job_id)).first()
        before = JobView.from_dict(row.view) if row else None
        after = evolve(before, event)
        if after is None or after == before:
            return
        values = {
            "ended_at": after.finished_at if after.status.is_terminal else None,
            "view": after.to_dict(),
        }
        if before is None:
            session.execute(jobs.insert().values(job_id=after.job_id, **values))
        else:
            session.execute(jobs.update().where(jobs.c.job_id == after.job_id).values(**values))

    def after_batch(self, caught_up: bool) -> None:
        pass

    def tick(self) -> None:
        if self._marker is None:
            self._announce_start()
            return
        if time.monotonic() >= self._next_collection:
            self._next_collection = time.monotonic() + self._collect_every
            self._retention.collect()

    def _announce_start(self) -> None:
        started = self._new_event(EventType.FILESTORE_STARTED, None)
        try:
            self._log.append(started)
        except BrokerUnavailable as exc:
            log.warning("could not announce the filestore's start: %s", exc)
            return
        self._marker = started.event_id
