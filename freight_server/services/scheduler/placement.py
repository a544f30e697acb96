"""Where a queued job runs, and why it waits: small pure rules over the runners' capacity.

FIFO over the queue; a job goes to the runner that leaves the fewest GPUs stranded, then to the
least loaded one. A job never spans runners. Slots, GPUs (by UUID, with `gpu_memory` MiB or
more), CPUs and memory are counted against each runner's capacity, so none is overcommitted.
A job that fits nowhere now is given a reason a person understands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from freight_server.shared.jobs import JobView

Gpu = Mapping[str, Any]  # {"index", "uuid", "name", "memory_mb"}, as heartbeats report them


@dataclass(frozen=True)
class RunnerCapacity:
    runner_id: str
    slots: int
    gpus: tuple[Gpu, ...] = ()  # the runner's whole inventory
    cpus: float | None = None  # None: not reported, so not counted
    memory_mb: int | None = None
    used_slots: int = 0
    held_gpus: frozenset[str] = field(default_factory=frozenset)  # UUIDs reserved by jobs
    used_cpus: float = 0.0
    used_memory_mb: int = 0

    @property
    def free_slots(self) -> int:
        return self.slots - self.used_slots

    @property
    def free_gpus(self) -> tuple[Gpu, ...]:
        return tuple(g for g in self.gpus if g["uuid"] not in self.held_gpus)

    @property
    def free_cpus(self) -> float | None:
        return None if self.cpus is None else self.cpus - self.used_cpus

    @property
    def free_memory_mb(self) -> int | None:
        return None if self.memory_mb is None else self.memory_mb - self.used_memory_mb

    def reserve(self, job: JobView, gpus: Sequence[Gpu]) -> RunnerCapacity:
        return replace(
            self,
            used_slots=self.used_slots + 1,
            held_gpus=self.held_gpus | {g["uuid"] for g in gpus},
            used_cpus=self.used_cpus + (job.cpus or 0),
            used_memory_mb=self.used_memory_mb + (job.memory or 0),
        )

    def emptied(self) -> RunnerCapacity:
        """The same runner with nothing running: what it could ever take."""
        return replace(self, used_slots=0, held_gpus=frozenset(), used_cpus=0.0, used_memory_mb=0)


@dataclass(frozen=True)
class Placement:
    job_id: str
    runner_id: str
    attempt: int
    gpus: tuple[Gpu, ...] = ()
    cpus: float = 0.0
    memory_mb: int = 0
    owner: str = "anonymous"


class Fairness(Protocol):
    """The turn and quota rules over owners (fairshare.py), told of each placement."""

    def placed(self, job: JobView) -> None: ...

    def blocked(self, job: JobView) -> str | None:
        """Why the job's owner may not have it placed now, if they may not."""


@dataclass(frozen=True)
class Plan:
    placements: list[Placement]
    waiting: dict[str, str]  # job id -> why it is still queued, in queue order
    runners: list[RunnerCapacity] = field(default_factory=list)  # as the placements left them
    last: JobView | None = None  # the last job looked at
    # The pass stopped at `last` because no runner had a free slot: the rest of the queue
    # was not looked at, and waits for a slot (`waiting_reason` says so for any of them).
    full: bool = False


Shape = tuple[int | None, int | None, float | None, int | None]


# -- the rules ---------------------------------------------------------------------------------


def gpus_wanted(job: JobView) -> int:
    return job.gpus or 0


def usable_gpus(job: JobView, runner: RunnerCapacity) -> list[Gpu]:
    """Free GPUs with enough memory; the smallest first, so big ones stay free for big jobs."""
    wanted_memory = job.gpu_memory or 0
    usable = [g for g in runner.free_gpus if int(g.get("memory_mb") or 0) >= wanted_memory]
    return sorted(usable, key=lambda g: (int(g.get("memory_mb") or 0), g.get("index", 0)))


def has_free_slot(job: JobView, runner: RunnerCapacity) -> bool:
    return runner.free_slots > 0


def has_enough_gpus(job: JobView, runner: RunnerCapacity) -> bool:
    return len(usable_gpus(job, runner)) >= gpus_wanted(job)


def has_enough_cpus(job: JobView, runner: RunnerCapacity) -> bool:
    free = runner.free_cpus
    # A small tolerance: 0.1 + 0.2 CPUs must fit in 0.3.
    return not job.cpus or free is None or job.cpus <= free + 1e-9


def has_enough_memory(job: JobView, runner: RunnerCapacity) -> bool:
    free = runner.free_memory_mb
    return not job.memory or free is None or job.memory <= free


PREDICATES = (has_free_slot, has_enough_gpus, has_enough_cpus, has_enough_memory)


def fits(job: JobView, runner: RunnerCapacity) -> bool:
    return all(rule(job, runner) for rule in PREDICATES)


def any_free_slot(runners: Iterable[RunnerCapacity]) -> bool:
    return any(r.free_slots > 0 for r in runners)


def shape_of(job: JobView) -> Shape:
    """All that the rules read of a job: two jobs of one shape fit, or wait, alike."""
    return (job.gpus, job.gpu_memory, job.cpus, job.memory)


def preference(job: JobView, runner: RunnerCapacity) -> tuple[int, int, str]:
    """Lower is better: fewest GPUs left stranded, then most free slots, then a stable order."""
    stranded = len(runner.free_gpus) - gpus_wanted(job)
    return (stranded, -runner.free_slots, runner.runner_id)


# -- the plan ----------------------------------------------------------------------------------


def place(
    queued: Iterable[JobView],
    runners: Sequence[RunnerCapacity],
    until_full: bool = False,
    fairness: Fairness | None = None,
) -> Plan:
    """Assign as many queued jobs as fit, in queue order; say why each of the others waits.
    `until_full`: stop looking once no runner has a free slot, as no later job can fit.
    `fairness`: told of each placement; a job it blocks waits with its reason."""
    free = {r.runner_id: r for r in runners}
    placements = []
    unplaced: list[tuple[JobView, str | None]] = []  # with the quota's reason, if that
    # Capacity only shrinks during a pass: a shape that fitted nowhere fits nowhere later.
    misfits: set[Shape] = set()
    last, full = None, False
    for job in queued:
        if until_full and not any_free_slot(free.values()):
            full = True
            break
        last = job
        blocked = fairness.blocked(job) if fairness is not None else None
        if blocked is not None:
            unplaced.append((job, blocked))
            continue
        candidates = [] if shape_of(job) in misfits else [r for r in free.values() if fits(job, r)]
        if not candidates:
            misfits.add(shape_of(job))
            unplaced.append((job, None))
            continue
        runner = min(candidates, key=lambda r: preference(job, r))
        taken = tuple(usable_gpus(job, runner)[: gpus_wanted(job)])
        free[runner.runner_id] = runner.reserve(job, taken)
        placements.append(
            Placement(
                job.job_id,
                runner.runner_id,
                job.attempt + 1,
                taken,
                cpus=job.cpus or 0.0,
                memory_mb=job.memory or 0,
                owner=job.owner,
            )
        )
        if fairness is not None:
            fairness.placed(job)
    left = list(free.values())
    reason = reasons_for(left)
    waiting = {job.job_id: blocked or reason(job) for job, blocked in unplaced}
    return Plan(placements, waiting, left, last, full)


def reasons_for(runners: Sequence[RunnerCapacity]) -> Callable[[JobView], str]:
    """`waiting_reason` over `runners`, worked out once for each shape of job."""
    known: dict[Shape, str] = {}

    def reason(job: JobView) -> str:
        shape = shape_of(job)
        if shape not in known:
            known[shape] = waiting_reason(job, runners)
        return known[shape]

    return reason


def waiting_reason(job: JobView, runners: Sequence[RunnerCapacity]) -> str:
    """Why `job` fits none of `runners` now, in words: what it waits for and what there is."""
    if not runners:
        return "waiting for a runner to join"
    whole = [r.emptied() for r in runners]
    if not any(fits(job, r) for r in whole):
        short = _shortfall(job, whole)
        lacking = f"{short[0]} (most on one runner: {short[1]})" if short else _all_of(job)
        return f"no runner has {lacking}; waiting for one that does to join"
    open_runners = [r for r in runners if has_free_slot(job, r)]
    if not open_runners:
        return "waiting for a free slot; every runner is busy"
    short = _shortfall(job, open_runners)
    if short is None:
        return f"waiting for {_all_of(job)} on one runner"
    return f"waiting for {short[0]}; most free on one runner: {short[1]}"


def _shortfall(job: JobView, runners: Sequence[RunnerCapacity]) -> tuple[str, str] | None:
    """The first resource no runner has enough of, and the most that one runner has of it;
    None when each is there somewhere, but never all on one runner."""
    if not any(has_enough_gpus(job, r) for r in runners):
        most = max(len(usable_gpus(job, r)) for r in runners)
        wanted = _count(gpus_wanted(job), "GPU")
        if job.gpu_memory:
            wanted += f" with {job.gpu_memory} MiB"
        return wanted, str(most)
    if not any(has_enough_cpus(job, r) for r in runners):
        most_cpus = max(max(r.free_cpus or 0.0, 0.0) for r in runners)
        return _count(job.cpus or 0, "CPU"), f"{most_cpus:g}"
    if not any(has_enough_memory(job, r) for r in runners):
        most_memory = max(max(r.free_memory_mb or 0, 0) for r in runners)
        return f"{job.memory} MiB of memory", f"{most_memory} MiB"
    return None


def _all_of(job: JobView) -> str:
    parts = [_count(gpus_wanted(job), "GPU")] if gpus_wanted(job) else []
    if job.cpus:
        parts.append(_count(job.cpus, "CPU"))
    if job.memory:
        parts.append(f"{job.memory} MiB of memory")
    return " and ".join(parts) + " at once"


def _count(n: float, unit: str) -> str:
    return f"{n:g} {unit}" + ("" if n == 1 else "s")
