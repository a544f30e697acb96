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

from services.filestore import schema
from services.filestore.retention import Retention
from shared.bus import BrokerUnavailable
from shared.consumer import Logged
from shared.events import EventFactory, EventType
from shared.jobs import JobView
from shared.views import fold_views, write_views

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

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        if any(event.event_id == self._marker for event, _ in batch):
            self._retention.caught_up.set()
            log.info("filestore caught up with the log; retention is on")
        for event, _ in batch:
            if event.job_id and event.type in (
                EventType.JOB_SUBMITTED,
                EventType.JOB_OUTPUTS_SAVED,
            ):
                self._refer(session, event.job_id, event.data.get("files") or ())
        write_views(session, schema.jobs, fold_views(session, schema.jobs, batch), _job_columns)

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
