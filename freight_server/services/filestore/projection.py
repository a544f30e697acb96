"""The filestore's projection of the log: which jobs refer to which blobs (their inputs from
JobSubmitted, their outputs from JobOutputsSaved) and when each job ended. Retention reads it.

Deleting waits until the filestore has read back its own FilestoreStarted: by then it has
replayed everything before it, so no blob goes for want of a reference it has not read yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.filestore import schema
from freight_server.services.filestore.retention import Retention
from freight_server.shared.bus import BrokerUnavailable
from freight_server.shared.consumer import Logged
from freight_server.shared.db import in_slices, insert_many
from freight_server.shared.events import EventFactory, EventType
from freight_server.shared.filestore_protocol import EMPTY_DIGEST
from freight_server.shared.jobs import JobView
from freight_server.shared.views import ViewCache, fold_views, write_views

log = logging.getLogger(__name__)


class FilestoreProjection:
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
        self._views = ViewCache()  # the jobs' views as this projection last committed them

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        if any(event.event_id == self._marker for event, _ in batch):
            self._retention.caught_up.set()
            log.info("filestore caught up with the log; retention is on")
        submitted = self._known_jobs(session, batch)
        for event, _ in batch:
            if not event.job_id or event.type not in (
                EventType.JOB_SUBMITTED,
                EventType.JOB_OUTPUTS_SAVED,
            ):
                continue
            files = event.data.get("files") or ()
            if event.type == EventType.JOB_SUBMITTED and event.job_id in submitted:
                # A retry's JobSubmitted (Idempotency-Key): the job keeps its first inputs, so
                # the retry's uploads are no one's, and go.
                self._end_holds(session, files)
                continue
            submitted.add(event.job_id)
            self._refer(session, event.job_id, files)
        changes = fold_views(session, schema.jobs, batch, cache=self._views)
        write_views(session, schema.jobs, changes, _job_columns)

    def _refer(self, session: Session, job_id: str, files: Iterable[Mapping[str, Any]]) -> None:
        """The job refers to these blobs: they are kept for it, and the uploads' holds, having
        served their purpose, end."""
        refs, files = schema.refs, list(files)
        self._end_holds(session, files)
        # The empty blob is never stored, so there is nothing to keep for it.
        digests = {f["digest"] for f in files if f.get("digest")} - {EMPTY_DIGEST}
        if not digests:
            return
        known: set[str] = set()
        for some in in_slices(sorted(digests)):
            known.update(
                session.execute(
                    sa.select(refs.c.digest).where(refs.c.job_id == job_id, refs.c.digest.in_(some))
                ).scalars()
            )
        new = [{"job_id": job_id, "digest": digest} for digest in sorted(digests - known)]
        insert_many(session, refs, new)

    @staticmethod
    def _end_holds(session: Session, files: Iterable[Mapping[str, Any]]) -> None:
        """An upload's hold, or a batch's (the thousands of small outputs it stored, one name)."""
        uploads = sorted({str(f["upload"]) for f in files if f.get("upload")})
        for some in in_slices(uploads):
            for holds in (schema.holds, schema.batch_holds):
                session.execute(holds.delete().where(holds.c.upload.in_(some)))

    @staticmethod
    def _known_jobs(session: Session, batch: Sequence[Logged]) -> set[str]:
        """The jobs of the batch's JobSubmitted that an earlier batch already submitted."""
        ids = {e.job_id for e, _ in batch if e.job_id and e.type == EventType.JOB_SUBMITTED}
        if not ids:
            return set()
        return set(session.execute(_KNOWN, {"ids": sorted(ids)}).scalars())

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


def _job_columns(view: JobView) -> dict[str, Any]:
    """A job's row: its view, and when it ended (retention counts from then)."""
    return {
        "ended_at": view.finished_at if view.status.is_terminal else None,
        "view": view.to_dict(),
    }


# Built once: every batch with a submission runs it.
_KNOWN = sa.select(schema.jobs.c.job_id).where(
    schema.jobs.c.job_id.in_(sa.bindparam("ids", expanding=True))
)
