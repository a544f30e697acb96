"""What each ended attempt saved, for `GET /jobs/{id}/files` and TES outputs: its JobOutputsSaved,
read from the events the API keeps (`api_events`) and indexed in memory.

The manifest is not copied into rows of its own: a job of twenty thousand outputs would cost the
projection twenty thousand rows to write before its `job_response`, for listings read a few
times if at all. The first read of an attempt's files parses its event (tens of milliseconds for
twenty thousand entries); the manifests read last stay indexed, up to CACHED_ENTRIES entries in
all. An event never changes, so a manifest kept is never stale: an attempt saved twice (a runner
that saved its outputs again after a restart) is read from its later event, as the projection
would have replaced its rows.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from freight_server.services.api import schema
from freight_server.services.api.owner_files import OwnerFiles
from freight_server.shared.events import EventType, MalformedEvent, upcast
from freight_server.shared.job_paths import parent_of

log = logging.getLogger(__name__)

CACHED_ENTRIES = 100_000  # in each API process; a manifest counts its entries and one more
CACHED_MANIFESTS = 1_000


class SavedEntry(NamedTuple):
    """One path an attempt listed: saved, or `skipped` (why it was not)."""

    path: str
    name: str
    type: str
    size: int
    mode: str
    modified: str | None
    digest: str | None
    target: str | None
    skipped: str | None


def _entry(listed: Mapping[str, Any], skipped: str | None) -> SavedEntry:
    path = str(listed["path"])
    return SavedEntry(
        path,
        posixpath.basename(path),
        str(listed.get("type") or "file"),
        int(listed.get("size") or 0),
        str(listed.get("mode") or "0644"),
        listed.get("modified"),
        listed.get("digest"),
        listed.get("target"),
        skipped,
    )


def check_saved(data: Mapping[str, Any]) -> None:
    """Raise for a JobOutputsSaved whose files could not be read: the projection sets it aside
    as a dead letter rather than keep what every read of the job's files would fail on."""
    int(data["attempt"])
    for key in ("files", "skipped"):
        listed = data.get(key) or []
        if not isinstance(listed, list) or not all(
            isinstance(entry, Mapping) and "path" in entry for entry in listed
        ):
            raise ValueError(f"a JobOutputsSaved's {key} must be a list of entries with a path")


class Manifest:
    """One JobOutputsSaved's entries by path, and each directory's saved entries by name."""

    def __init__(self, data: Mapping[str, Any]):
        self.attempt = int(data["attempt"])
        listed = [_entry(f, None) for f in data.get("files") or ()]
        for skipped in data.get("skipped") or ():
            listed.append(_entry(skipped, skipped.get("reason") or "not saved"))
        self._entries = {entry.path: entry for entry in listed}  # a path listed twice: the last
        self._children: dict[str, list[SavedEntry]] = {}
        for entry in self._entries.values():
            if entry.skipped is None and entry.path != "/":
                self._children.setdefault(parent_of(entry.path), []).append(entry)
        for children in self._children.values():
            children.sort(key=lambda entry: entry.name)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, path: str) -> SavedEntry | None:
        return self._entries.get(path)

    def children(self, path: str) -> list[SavedEntry]:
        return self._children.get(path, [])


NOTHING_SAVED = Manifest({"attempt": 0})  # an attempt that saved nothing, or not yet


class OutputStore:
    """Reads of the saved manifests: each attempt's, and (`by_owner`) each owner's newest."""

    def __init__(
        self,
        engine: sa.Engine,
        cached_entries: int = CACHED_ENTRIES,
        cached_manifests: int = CACHED_MANIFESTS,
    ):
        self._engine = engine
        self.by_owner = OwnerFiles(engine)
        self._cached_entries = cached_entries
        self._cached_manifests = cached_manifests
        self._cache: OrderedDict[str, Manifest] = OrderedDict()  # by event id, last read last
        self._lock = threading.Lock()

    def manifest(self, job_id: str, attempt: int) -> Manifest | None:
        """The attempt's latest JobOutputsSaved; None if it saved nothing (or has not yet)."""
        with self._engine.connect() as connection:
            saved = connection.execute(_SAVED, {"job": job_id}).scalars().all()
            for manifest in self._manifests(connection, saved):
                if manifest.attempt == attempt:
                    return manifest
        return None

    def _manifests(self, connection: sa.Connection, event_ids: Iterable[str]) -> Iterator[Manifest]:
        """The events' manifests, in their order, each parsed once while it stays cached."""
        for event_id in event_ids:
            with self._lock:
                manifest = self._cache.get(event_id)
                if manifest is not None:
                    self._cache.move_to_end(event_id)
            if manifest is None:
                body = connection.execute(_BODY, {"id": event_id}).scalar_one()
                try:
                    manifest = Manifest(upcast(body)["data"])
                except (MalformedEvent, KeyError, TypeError, ValueError, AttributeError) as exc:
                    # Kept before check_saved was asked of every such event: read past it.
                    log.warning("JobOutputsSaved %s cannot be read: %r", event_id, exc)
                    continue
                self._keep(event_id, manifest)
            yield manifest

    def _keep(self, event_id: str, manifest: Manifest) -> None:
        """Cached, the least recently read going first past either bound (the one just read
        stays, however large)."""
        with self._lock:
            self._cache[event_id] = manifest
            kept = sum(len(m) + 1 for m in self._cache.values())
            while len(self._cache) > 1 and (
                kept > self._cached_entries or len(self._cache) > self._cached_manifests
            ):
                _, oldest = self._cache.popitem(last=False)
                kept -= len(oldest) + 1


# Built once: every read of an ended job's files runs them.
_events = schema.events
_SAVED = (
    sa.select(_events.c.event_id)
    .where(
        _events.c.job_id == sa.bindparam("job"),
        _events.c.type == EventType.JOB_OUTPUTS_SAVED.value,
    )
    .order_by(_events.c.position.desc())
)
_BODY = sa.select(_events.c.body).where(_events.c.event_id == sa.bindparam("id"))
