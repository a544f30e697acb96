"""Job views in a projection's table, folded a batch at a time.

The views a batch touches are read in one query, the batch's events folded into them in memory
(`shared.jobs.evolve`), and each changed view written back once: a handful of statements a batch
instead of two a event, which is what a projection catching up on a long log is bound by.
A `ViewCache` keeps the views the projection's own transactions committed, so that a batch
reads from the database only those it has not seen (reading and decoding them was a fifth of a
runner's CPU in a fleet, where every runner folds every job).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.shared.consumer import CONSUMING, Logged
from freight_server.shared.db import execute_many, insert_many, kept_until_committed
from freight_server.shared.jobs import JobView, evolve


@dataclass(frozen=True)
class ViewChange:
    before: JobView | None  # as stored before the batch; None: the batch created the job
    after: JobView
    position: int  # where in the log the batch first changed it (a new job's own position)


class ViewCache:
    """The views a projection's own transactions committed, for the batches of the same stretch
    of consuming (`CONSUMING`) to take as stored. In that stretch nothing else writes them: a
    second process applying the log moves the offset, and the consumer's compare-and-set then
    rolls the batch back and starts over from the stored position, a new stretch.

    Anything else empties it: a rollback, a savepoint's included (which views it undid is not
    known); a new stretch; a transaction of no consumer (a dead letter replayed). An ended job's
    view is not kept, since retention deletes those rows behind the projection's back; past
    `limit` views the oldest go."""

    def __init__(self, limit: int = 10_000):
        self._views: dict[str, JobView] = {}
        self._stretch: object | None = None
        self._limit = limit
        self._key = f"views.cached.{id(self)}"

    def stored(self, session: Session, ids: Iterable[str]) -> dict[str, JobView]:
        """Of these jobs' views, those the transaction may take as stored without reading them:
        what it folded itself so far, then what was committed before it."""
        stretch = session.info.get(CONSUMING)
        if stretch is None or stretch is not self._stretch:
            self._forget()
            self._stretch = stretch
        pending: dict[str, JobView] = {}
        for views in self._pending(session):
            pending.update(views)
        found = {}
        for job_id in ids:
            view = pending.get(job_id) or self._views.get(job_id)
            if view is not None:
                found[job_id] = view
        return found

    def folded(self, session: Session, views: Iterable[JobView]) -> None:
        """The transaction writes these views (or found them so): kept once it commits."""
        if session.info.get(CONSUMING) is not None:
            self._pending(session).append({view.job_id: view for view in views})

    def _pending(self, session: Session) -> list[dict[str, JobView]]:
        return kept_until_committed(session, self._key, self._committed, self._forget)

    def _committed(self, folds: list[dict[str, JobView]]) -> None:
        for views in folds:
            for job_id, view in views.items():
                self._views.pop(job_id, None)  # to the end: the oldest go first
                if view.finished_at is None and not view.status.is_terminal:
                    self._views[job_id] = view
        for job_id in list(islice(self._views, max(0, len(self._views) - self._limit))):
            del self._views[job_id]

    def _forget(self) -> None:
        self._views.clear()
        self._stretch = None


def fold_views(
    session: Session,
    table: sa.Table,
    batch: Sequence[Logged],
    scope: Mapping[str, Any] | None = None,
    cache: ViewCache | None = None,
) -> list[ViewChange]:
    """Fold the batch's job events into the views of `table` (columns `job_id` and `view`, and
    the `scope` columns that pick this projection's rows); returns the changed views, in the
    order the batch first changed them. Nothing is written: the caller writes the changes in the
    same transaction (`write_views`), which a `cache` takes for granted."""
    job_events = [logged for logged in batch if logged.event.job_id is not None]
    if not job_events:
        return []
    wanted = sorted({str(event.job_id) for event, _ in job_events})
    stored = cache.stored(session, wanted) if cache is not None else {}
    unknown = [job_id for job_id in wanted if job_id not in stored]
    if unknown:
        stored.update(
            (row.job_id, JobView.from_dict(row.view))
            for row in session.execute(
                _stored_views(table, tuple(scope or ())), {"ids": unknown, **_scope_values(scope)}
            )
        )
    views: dict[str, JobView] = dict(stored)
    first_changed: dict[str, int] = {}
    for event, position in job_events:
        job_id = str(event.job_id)
        before = views.get(job_id)
        after = evolve(before, event)
        if after is None or after == before:
            continue
        views[job_id] = after
        first_changed.setdefault(job_id, position)
    changes = [
        ViewChange(stored.get(job_id), views[job_id], position)
        for job_id, position in first_changed.items()
        if views[job_id] != stored.get(job_id)
    ]
    if cache is not None:
        cache.folded(session, views.values())
    return changes


def write_views(
    session: Session,
    table: sa.Table,
    changes: Sequence[ViewChange],
    columns: Callable[[JobView], dict[str, Any]],
    scope: Mapping[str, Any] | None = None,
    created: Callable[[ViewChange], dict[str, Any]] | None = None,
) -> None:
    """Write the changed views back: `columns` gives a view's row (its `view` column included),
    `created` what only a new row gets (e.g. its position)."""
    inserts = [
        {**(scope or {}), "job_id": c.after.job_id, **columns(c.after), **(created or _none)(c)}
        for c in changes
        if c.before is None
    ]
    where = _scope_values(scope)
    updates = [
        {**where, "key": c.after.job_id, **columns(c.after)}
        for c in changes
        if c.before is not None
    ]
    insert_many(session, table, inserts)
    execute_many(session, _update(table, tuple(scope or ())), updates)


def view_columns(view: JobView) -> dict[str, Any]:
    """A view's row where a table keeps its status, runner and end beside it to query by."""
    return {
        "status": view.status.value,
        "runner": view.runner,
        "view": view.to_dict(),
        "finished_at": view.finished_at,
    }


# The statements, built once a table (and scope): SQLAlchemy keeps a statement's cache key
# with it, so one built again for every batch paid for its construction and its key each time.


@cache
def _stored_views(table: sa.Table, scope: tuple[str, ...]) -> sa.Select[Any]:
    return sa.select(table.c.job_id, table.c.view).where(
        *_scoped(table, scope), table.c.job_id.in_(sa.bindparam("ids", expanding=True))
    )


@cache
def _update(table: sa.Table, scope: tuple[str, ...]) -> sa.Update:
    return table.update().where(*_scoped(table, scope), table.c.job_id == sa.bindparam("key"))


def _scoped(table: sa.Table, scope: tuple[str, ...]) -> list[sa.ColumnElement[bool]]:
    return [table.c[name] == sa.bindparam(f"scope_{name}") for name in scope]


def _scope_values(scope: Mapping[str, Any] | None) -> dict[str, Any]:
    return {f"scope_{name}": value for name, value in (scope or {}).items()}


def _none(_change: ViewChange) -> dict[str, Any]:
    return {}
