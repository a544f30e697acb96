"""Job views in a projection's table, folded a batch at a time.

The views a batch touches are read in one query, the batch's events folded into them in memory
(`shared.jobs.evolve`), and each changed view written back once: a handful of statements a batch
instead of two a event, which is what a projection catching up on a long log is bound by.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.shared.consumer import Logged
from freight_server.shared.jobs import JobView, evolve


@dataclass(frozen=True)
class ViewChange:
    before: JobView | None  # as stored before the batch; None: the batch created the job
    after: JobView
    position: int  # where in the log the batch first changed it (a new job's own position)


def fold_views(
    session: Session,
    table: sa.Table,
    batch: Sequence[Logged],
    scope: Mapping[str, Any] | None = None,
) -> list[ViewChange]:
    """Fold the batch's job events into the views of `table` (columns `job_id` and `view`, and
    the `scope` columns that pick this projection's rows); returns the changed views, in the
    order the batch first changed them. Nothing is written: see `write_views`."""
    job_events = [logged for logged in batch if logged.event.job_id is not None]
    if not job_events:
        return []
    wanted = sorted({str(event.job_id) for event, _ in job_events})
    stored = {
        row.job_id: JobView.from_dict(row.view)
        for row in session.execute(
            _stored_views(table, tuple(scope or ())), {"ids": wanted, **_scope_values(scope)}
        )
    }
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
    return [
        ViewChange(stored.get(job_id), views[job_id], position)
        for job_id, position in first_changed.items()
        if views[job_id] != stored.get(job_id)
    ]


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
    if inserts:
        session.execute(_insert(table), inserts)
    if updates:
        session.execute(_update(table, tuple(scope or ())), updates)


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
def _insert(table: sa.Table) -> sa.Insert:
    return table.insert()


@cache
def _update(table: sa.Table, scope: tuple[str, ...]) -> sa.Update:
    return table.update().where(*_scoped(table, scope), table.c.job_id == sa.bindparam("key"))


def _scoped(table: sa.Table, scope: tuple[str, ...]) -> list[sa.ColumnElement[bool]]:
    return [table.c[name] == sa.bindparam(f"scope_{name}") for name in scope]


def _scope_values(scope: Mapping[str, Any] | None) -> dict[str, Any]:
    return {f"scope_{name}": value for name, value in (scope or {}).items()}


def _none(_change: ViewChange) -> dict[str, Any]:
    return {}
