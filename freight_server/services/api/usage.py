"""What each owner has used: jobs ended, and the seconds, GPU-seconds and CPU-seconds they ran.

Kept by the API's projection from the log alone — a job's run is its `started_at` to its
`finished_at`, both the log's own times — so a rebuild from the log (a new database, a kill -9
and a replay) gives the same figures to the last digit: each job adds whole milliseconds, and
integer sums do not depend on how the log was cut into batches.

A job's GPUs are those assigned to it; its CPUs are those it asked for, or one (it held a slot)
if it asked for none. Time on a runner that was then lost is not counted; its retry's is.
`GET /usage` answers a user with their own row and an admin with everyone's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol

import falcon
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.api import schema
from freight_server.services.api.auth import caller_of
from freight_server.services.api.errors import ApiError
from freight_server.shared.jobs import JobView
from freight_server.shared.views import ViewChange


def record_usage(session: Session, changes: Iterable[ViewChange]) -> None:
    """Add the jobs that ended in this batch to their owners' rows."""
    ended = (
        change.after
        for change in changes
        if change.after.status.is_terminal
        and not (change.before and change.before.status.is_terminal)
    )
    _add(session, _totals(ended))


def backfill(connection: sa.Connection) -> None:
    """The rows, from the views of the jobs that ended before there were rows (a migration)."""
    jobs = schema.jobs
    views = connection.execute(
        sa.select(jobs.c.view).where(jobs.c.status.in_(["COMPLETE", "FAILED"]))
    ).scalars()
    _add(connection, _totals(JobView.from_dict(view) for view in views))


def _totals(ended: Iterable[JobView]) -> dict[str, list[int]]:
    """Per owner: jobs, run ms, GPU-ms, CPU-ms."""
    added: dict[str, list[int]] = {}
    for job in ended:
        run = _run_ms(job)
        total = added.setdefault(job.owner, [0, 0, 0, 0])
        total[0] += 1
        total[1] += run
        total[2] += run * len(job.assigned_gpus)
        total[3] += round(run * (job.cpus or 1.0))
    return added


_SUMS = ("jobs", "run_ms", "gpu_ms", "cpu_ms")


def _run_ms(job: JobView) -> int:
    if job.started_at is None or job.finished_at is None:
        return 0
    return max(0, (job.finished_at - job.started_at) // timedelta(milliseconds=1))


def _add(session: Session | sa.Connection, added: dict[str, list[int]]) -> None:
    if not added:
        return
    known = {row.owner for row in session.execute(_KNOWN, {"owners": sorted(added)})}
    if inserts := [
        {"owner": owner, **dict(zip(_SUMS, sums, strict=True))}
        for owner, sums in sorted(added.items())
        if owner not in known
    ]:
        session.execute(_INSERT, inserts)
    if updates := [
        {"who": owner, **{f"add_{name}": n for name, n in zip(_SUMS, sums, strict=True)}}
        for owner, sums in sorted(added.items())
        if owner in known
    ]:
        session.execute(_ADD, updates)


# Built once: statements built again for every batch cost the projection more than running them.
_usage = schema.usage
_KNOWN = sa.select(_usage.c.owner).where(_usage.c.owner.in_(sa.bindparam("owners", expanding=True)))
_INSERT = _usage.insert()
_ADD = (
    _usage.update()
    .where(_usage.c.owner == sa.bindparam("who"))
    .values({name: _usage.c[name] + sa.bindparam(f"add_{name}") for name in _SUMS})
)


class UsageSource(Protocol):
    def usage(self, owner: str | None) -> list[dict[str, Any]]: ...


class Usage:
    """`GET /usage`: `{results: [{owner, jobs, run_seconds, gpu_seconds, cpu_seconds}]}`, the
    most GPU-seconds first."""

    def __init__(self, jobs: UsageSource):
        self._jobs = jobs

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = caller_of(req)
        asked = req.get_param("owner") or None
        if not caller.is_admin:
            if asked not in (None, caller.name):
                raise ApiError(
                    falcon.HTTP_403, "forbidden", "only an admin may see another owner's usage"
                )
            asked = caller.name
        resp.media = {"results": self._jobs.usage(asked)}


def read_usage(connection: sa.Connection, owner: str | None = None) -> list[dict[str, Any]]:
    usage = schema.usage
    query = sa.select(usage).order_by(usage.c.gpu_ms.desc(), usage.c.owner)
    if owner is not None:
        query = query.where(usage.c.owner == owner)
    return [
        {
            "owner": row.owner,
            "jobs": row.jobs,
            "run_seconds": row.run_ms / 1000,
            "gpu_seconds": row.gpu_ms / 1000,
            "cpu_seconds": row.cpu_ms / 1000,
        }
        for row in connection.execute(query)
    ]
