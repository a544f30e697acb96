"""Who goes next: the highest priority first; within it, the owner furthest below a fair share;
within an owner, the oldest job. And no owner past their quota.

Fairness is dominant-resource fairness (DRF, Ghodsi et al. 2011) over the live cluster's GPUs,
CPUs, memory and slots: an owner's dominant share is the largest fraction of any of them that
their active jobs hold. The owner with the smallest share goes next, so with 2 GPUs, owner A's
20 queued jobs and then owner B's 5, B's first job takes the next GPU that frees. A pass is told
each placement as it makes it, so one pass interleaves owners as it fills the cluster.

Quotas (`max_gpus`, `max_running` per owner) come from the log (`OwnerQuotaSet`, appended by
the API from its tokens file), so placement stays a function of the log and the runners' state.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from freight_server.services.scheduler.placement import Placement, RunnerCapacity, gpus_wanted
from freight_server.shared.jobs import JobView


@dataclass(frozen=True)
class Quota:
    max_gpus: int | None = None
    max_running: int | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> Quota:
        def bound(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(str(value))

        return cls(bound("max_gpus"), bound("max_running"))


@dataclass
class Usage:
    """What one owner's active jobs (and this pass's placements) hold."""

    gpus: int = 0
    cpus: float = 0.0
    memory_mb: int = 0
    running: int = 0

    def add(self, gpus: int, cpus: float, memory_mb: int) -> None:
        self.gpus += gpus
        self.cpus += cpus
        self.memory_mb += memory_mb
        self.running += 1


@dataclass(frozen=True)
class Totals:
    """The live cluster's capacity: what shares are fractions of."""

    gpus: int
    cpus: float
    memory_mb: int
    slots: int

    @classmethod
    def of(cls, runners: Iterable[RunnerCapacity]) -> Totals:
        runners = list(runners)
        return cls(
            gpus=sum(len(r.gpus) for r in runners),
            cpus=sum(r.cpus or 0.0 for r in runners),
            memory_mb=sum(r.memory_mb or 0 for r in runners),
            slots=sum(r.slots for r in runners),
        )


def dominant_share(usage: Usage, totals: Totals) -> float:
    fractions = [
        held / total
        for held, total in (
            (usage.gpus, totals.gpus),
            (usage.cpus, totals.cpus),
            (usage.memory_mb, totals.memory_mb),
            (usage.running, totals.slots),
        )
        if total
    ]
    return max(fractions, default=0.0)


def usage_by_owner(holds: Iterable[Placement]) -> dict[str, Usage]:
    usage: dict[str, Usage] = {}
    for hold in holds:
        usage.setdefault(hold.owner, Usage()).add(len(hold.gpus), hold.cpus, hold.memory_mb)
    return usage


Lane = Iterable[tuple[int, JobView]]  # one owner's queued jobs at one priority, oldest first
# (share, position of the head job, owner, the rest of the lane, the head job)
_Head = tuple[float, int, str, Iterator[tuple[int, JobView]], JobView]


class FairQueue:
    """The queued jobs in the order one placement pass looks at them. `placed` tells it of a
    placement, which moves its owner back in the order; `blocked` says why a job may not be
    placed now because of its owner's quota."""

    def __init__(
        self,
        lanes: Mapping[tuple[int, str], Lane],
        usage: dict[str, Usage],
        totals: Totals,
        quotas: Mapping[str, Quota],
    ):
        self._lanes = lanes
        self._usage = usage
        self._totals = totals
        self._quotas = quotas

    def __iter__(self) -> Iterator[JobView]:
        for priority in sorted({p for p, _ in self._lanes}, reverse=True):
            yield from self._level(priority)

    def _level(self, priority: int) -> Iterator[JobView]:
        """Owners by share, the one whose next job is oldest first among equals."""
        heads: list[_Head] = []
        for (level, owner), lane in self._lanes.items():
            if level == priority:
                self._push(heads, owner, iter(lane))
        while heads:
            _, _, owner, lane, job = heapq.heappop(heads)
            yield job  # `placed` may be called meanwhile: the owner's share is read after
            self._push(heads, owner, lane)

    def _push(self, heads: list[_Head], owner: str, lane: Iterator[tuple[int, JobView]]) -> None:
        head = next(lane, None)
        if head is not None:
            position, job = head
            heapq.heappush(heads, (self._share(owner), position, owner, lane, job))

    def placed(self, job: JobView) -> None:
        self._usage.setdefault(job.owner, Usage()).add(
            gpus_wanted(job), job.cpus or 0.0, job.memory or 0
        )

    def blocked(self, job: JobView) -> str | None:
        quota = self._quotas.get(job.owner)
        if quota is None:
            return None
        usage = self._usage.get(job.owner, Usage())
        if quota.max_running is not None and usage.running >= quota.max_running:
            return (
                f"waiting for {job.owner}'s quota max_running={quota.max_running} "
                f"({usage.running} running)"
            )
        wanted = gpus_wanted(job)
        if quota.max_gpus is not None and wanted and usage.gpus + wanted > quota.max_gpus:
            if wanted > quota.max_gpus:
                return (
                    f"needs {wanted} GPUs, more than {job.owner}'s quota max_gpus={quota.max_gpus}"
                )
            return (
                f"waiting for {job.owner}'s quota max_gpus={quota.max_gpus} "
                f"({usage.gpus} GPUs held)"
            )
        return None

    def _share(self, owner: str) -> float:
        return dominant_share(self._usage.get(owner, Usage()), self._totals)
