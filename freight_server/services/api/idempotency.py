"""`Idempotency-Key`: the same key from the same owner within a day names the same job.

The job id is not drawn at random but derived from (owner, key, generation). So a retry after a
publish that timed out yet landed in the log appends a second JobSubmitted for the same job id,
which every service's fold ignores (freight_server/shared/jobs.py): a retry can never make a
second job, even when the API has not yet read the first back. A key's job older than
KEY_LIFETIME frees the key: its next generation names a new job.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from freight_server.services.api.submission import InvalidRequest, JobRequest
from freight_server.shared.jobs import JobView

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_LIFETIME = timedelta(hours=24)
# Fixed for good: another namespace would give every key in use a new job id.
KEY_NAMESPACE = uuid.UUID("5b0c6d3e-8f1a-4c2b-9e7d-3a6f0b1c2d4e")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]{1,255}")


@dataclass(frozen=True)
class KeyedJob:
    job_id: str
    first: JobView | None  # the job this key already made within its lifetime, if any


def idempotency_key(header: str | None) -> str | None:
    """The request's key, checked; None when it sent none."""
    if header is None:
        return None
    if not _PRINTABLE_ASCII.fullmatch(header):
        raise InvalidRequest(HEADER, "must be 1 to 255 printable ASCII characters")
    return header


def keyed_job_id(owner: str, key: str, generation: int) -> str:
    return str(uuid.uuid5(KEY_NAMESPACE, f"{owner}\n{key}\n{generation}"))


def job_for_key(
    owner: str, key: str, find: Callable[[str], JobView | None], now: datetime
) -> KeyedJob:
    """The job id this key names now: the first generation whose job is unknown or still
    within KEY_LIFETIME. Each generation outlived the one before by a day, so the walk is
    short."""
    generation = 0
    while True:
        job_id = keyed_job_id(owner, key, generation)
        view = find(job_id)
        if view is None:
            return KeyedJob(job_id, None)
        if now - view.created_at < KEY_LIFETIME:
            return KeyedJob(job_id, view)
        generation += 1


def changed_field(
    first: JobView, request: JobRequest, files: Sequence[Mapping[str, Any]]
) -> str | None:
    """The first field in which a replayed request differs from the job its key made; None
    when it asks for the same job. Secret values are sealed, so only their names compare."""
    for name, value in request.event_data().items():
        if value != getattr(first, name):
            return name
    if set(request.secret_env) != set(first.secret_env):
        return "secret_env"
    if _inputs(files) != _inputs(first.files):
        return "file[]"
    return None


def _inputs(files: Sequence[Mapping[str, Any]]) -> set[tuple[Any, Any]]:
    return {(f.get("path"), f.get("digest")) for f in files}
