"""Reads of the API's projection, plus the jobs this process accepted but has not yet projected."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from freight_server.services.api import schema
from freight_server.services.api.usage import read_usage
from freight_server.shared.jobs import JobView, Status


@dataclass(frozen=True)
class Page:
    jobs: list[JobView]
    total: int
    next_cursor: int | None


class JobStore:
    def __init__(self, engine: sa.Engine):
        self._engine = engine

    def get(self, job_id: str) -> JobView | None:
        with self._engine.connect() as connection:
            view = connection.execute(
                sa.select(schema.jobs.c.view).where(schema.jobs.c.job_id == job_id)
            ).scalar_one_or_none()
        return JobView.from_dict(view) if view is not None else None

    def page(
        self,
        statuses: Sequence[Status] | None,
        limit: int,
        before: int | None,
        owner: str | None = None,
        id_prefix: str | None = None,
    ) -> Page:
        """Newest first; `before` is the cursor a previous page returned; `owner` (if given)
        keeps that user's jobs only, `id_prefix` (lowercase hexadecimal digits and dashes) the
        jobs whose id starts with it."""
        jobs = schema.jobs
        where = _kept(jobs, statuses, owner)
        if id_prefix:
            where.append(jobs.c.job_id.startswith(id_prefix))
        query = sa.select(jobs.c.position, jobs.c.view).where(*where)
        if before is not None:
            query = query.where(jobs.c.position < before)
        query = query.order_by(jobs.c.position.desc()).limit(limit + 1)
        counts = schema.job_counts
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
            total = connection.execute(
                # The counts table is kept by owner and status; a prefix is counted in the jobs.
                sa.select(sa.func.count()).select_from(jobs).where(*where)
                if id_prefix
                else sa.select(sa.func.coalesce(sa.func.sum(counts.c.jobs), 0)).where(
                    *_kept(counts, statuses, owner)
                )
            ).scalar_one()
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            jobs=[JobView.from_dict(r.view) for r in rows],
            total=int(total),  # a sum is a Decimal on PostgreSQL
            next_cursor=rows[-1].position if more else None,
        )

    def newest(
        self, owner: str | None, before: int | None, limit: int
    ) -> list[tuple[int, JobView]]:
        """(log position, job), newest first, before the position `before` (if given): every
        job, or `owner`'s only (freight_server/services/api/tes.py filters what it lists itself)."""
        jobs = schema.jobs
        query = sa.select(jobs.c.position, jobs.c.view)
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if before is not None:
            query = query.where(jobs.c.position < before)
        query = query.order_by(jobs.c.position.desc()).limit(limit)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [(int(r.position), JobView.from_dict(r.view)) for r in rows]

    def usage(self, owner: str | None = None) -> list[dict[str, Any]]:
        """What each owner (or only `owner`) used, the most GPU-seconds first."""
        with self._engine.connect() as connection:
            return read_usage(connection, owner)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self._engine.connect() as connection:
            return [
                row.body
                for row in connection.execute(
                    sa.select(schema.events.c.body)
                    .where(schema.events.c.job_id == job_id)
                    .order_by(schema.events.c.position)
                )
            ]


class RecentSubmissions:
    """Read-your-writes: a job this process just accepted is visible before it is projected."""

    def __init__(self, keep_for: float = 120.0):
        self._keep_for = keep_for
        self._views: OrderedDict[str, tuple[float, JobView]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, view: JobView) -> None:
        now = time.monotonic()
        with self._lock:
            while self._views and next(iter(self._views.values()))[0] < now:
                self._views.popitem(last=False)
            self._views[view.job_id] = (now + self._keep_for, view)

    def get(self, job_id: str) -> JobView | None:
        with self._lock:
            entry = self._views.get(job_id)
        return entry[1] if entry else None


def _kept(
    table: sa.Table, statuses: Sequence[Status] | None, owner: str | None
) -> list[sa.ColumnElement[bool]]:
    """The rows of these statuses (all if None) and this owner (any if None), in a table that
    has both columns (the jobs, and their counts)."""
    where: list[sa.ColumnElement[bool]] = []
    if statuses:
        where.append(table.c.status.in_([s.value for s in statuses]))
    if owner is not None:
        where.append(table.c.owner == owner)
    return where
