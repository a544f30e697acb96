"""The queue (FIFO by log position) and what the active jobs hold, kept in memory.

A cache of the committed `scheduler_jobs` rows, so that a placement pass costs what it places
and examines, not a read and a JSON decode of the whole queue: loaded from the table when the
scheduler first places, then told each committed change of a job's view (see projection.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

import sqlalchemy as sa

from freight_server.services.scheduler import schema
from freight_server.services.scheduler.placement import Placement
from freight_server.shared.jobs import ACTIVE, JobView, Status


class Backlog:
    def __init__(self) -> None:
        self._queued: dict[str, tuple[int, JobView]] = {}  # job id -> (position, view)
        self._order: list[tuple[int, str]] = []  # (position, job id) of the queued, sorted
        # The same by (priority, owner): the lanes fair share picks from (fairshare.py).
        self._lanes: dict[tuple[int, str], list[tuple[int, str]]] = {}
        self._holds: dict[str, Placement] = {}  # active job id -> what it holds

    @classmethod
    def load(cls, connection: sa.Connection) -> Backlog:
        """The queued and active jobs as the table has them now."""
        backlog = cls()
        jobs = schema.jobs
        rows = connection.execute(
            sa.select(jobs.c.position, jobs.c.view)
            .where(jobs.c.status.in_([s.value for s in (Status.QUEUED, *ACTIVE)]))
            .order_by(jobs.c.position)
        )
        for row in rows:
            backlog.record(JobView.from_dict(row.view), row.position)
        return backlog

    def record(self, job: JobView, position: int) -> None:
        """A job's committed view (`position`: its row's, where it was first submitted)."""
        if job.status == Status.QUEUED:
            self._enqueue(job, position)
        else:
            self._dequeue(job.job_id)
        if job.status in ACTIVE:
            self._holds[job.job_id] = hold_of(job)
        else:
            self._holds.pop(job.job_id, None)

    def queued(self, after: int = -1) -> Iterator[tuple[int, JobView]]:
        """(position, view) of the queued jobs past `after`, oldest first; do not record
        while iterating."""
        order = self._order
        for index in range(bisect.bisect_right(order, after, key=_position), len(order)):
            position, job_id = order[index]
            yield position, self._queued[job_id][1]

    def lanes(self) -> dict[tuple[int, str], Iterable[tuple[int, JobView]]]:
        """Each (priority, owner)'s queued jobs, oldest first, read lazily: do not record
        while iterating."""
        return {key: self._lane(order) for key, order in self._lanes.items()}

    def _lane(self, order: list[tuple[int, str]]) -> Iterator[tuple[int, JobView]]:
        for position, job_id in order:
            yield position, self._queued[job_id][1]

    def position_of(self, job_id: str) -> int:
        return self._queued[job_id][0]

    def view_of(self, job_id: str) -> JobView:
        return self._queued[job_id][1]

    def holds(self) -> Iterable[Placement]:
        return self._holds.values()

    def __contains__(self, job_id: object) -> bool:
        """Whether the job is queued."""
        return job_id in self._queued

    def __len__(self) -> int:
        """How many jobs are queued."""
        return len(self._queued)

    def _enqueue(self, job: JobView, position: int) -> None:
        known = self._queued.get(job.job_id)
        if known is not None and known[0] != position:
            self._dequeue(job.job_id)  # not expected: a row keeps its position
            known = None
        self._queued[job.job_id] = (position, job)
        if known is None:
            bisect.insort(self._order, (position, job.job_id))
            bisect.insort(self._lanes.setdefault(_lane_of(job), []), (position, job.job_id))

    def _dequeue(self, job_id: str) -> None:
        known = self._queued.pop(job_id, None)
        if known is None:
            return
        position, job = known
        del self._order[bisect.bisect_left(self._order, (position, job_id))]
        lane = self._lanes[_lane_of(job)]
        del lane[bisect.bisect_left(lane, (position, job_id))]
        if not lane:
            del self._lanes[_lane_of(job)]


def _lane_of(job: JobView) -> tuple[int, str]:
    return job.priority, job.owner


def _position(entry: tuple[int, str]) -> int:
    return entry[0]


def hold_of(job: JobView) -> Placement:
    """What an active job holds on its runner, in the placement's terms."""
    return Placement(
        job.job_id,
        job.runner or "",
        job.attempt,
        tuple(job.assigned_gpus),
        job.cpus or 0.0,
        job.memory or 0,
        job.owner,
    )
