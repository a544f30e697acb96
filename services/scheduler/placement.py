"""Where a queued job runs: small pure rules over the runners' free capacity.

FIFO over the queue; a job goes to the runner that leaves the fewest GPUs stranded, then to the
least loaded one. A job never spans runners.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared.jobs import JobView


@dataclass(frozen=True)
class RunnerCapacity:
    runner_id: str
    slots: int
    used_slots: int = 0
    free_gpus: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    @property
    def free_slots(self) -> int:
        return self.slots - self.used_slots


@dataclass(frozen=True)
class Placement:
    job_id: str
    runner_id: str
    attempt: int
    gpus: tuple[Mapping[str, Any], ...] = ()


def gpus_wanted(job: JobView) -> int:
    return job.gpus or 0


def has_free_slot(job: JobView, runner: RunnerCapacity) -> bool:
    return runner.free_slots > 0


def has_enough_gpus(job: JobView, runner: RunnerCapacity) -> bool:
    return len(runner.free_gpus) >= gpus_wanted(job)


PREDICATES = (has_free_slot, has_enough_gpus)


def fits(job: JobView, runner: RunnerCapacity) -> bool:
    return all(rule(job, runner) for rule in PREDICATES)


def preference(job: JobView, runner: RunnerCapacity) -> tuple[int, int, str]:
    """Lower is better: fewest GPUs left stranded, then most free slots, then a stable order."""
    stranded = len(runner.free_gpus) - gpus_wanted(job)
    return (stranded, -runner.free_slots, runner.runner_id)


def place(queued: Iterable[JobView], runners: Sequence[RunnerCapacity]) -> list[Placement]:
    """Assign as many queued jobs as fit, in queue order, onto the given free capacity."""
    free = {r.runner_id: r for r in runners}
    placements = []
    for job in queued:
        candidates = [r for r in free.values() if fits(job, r)]
        if not candidates:
            continue
        runner = min(candidates, key=lambda r: preference(job, r))
        taken = runner.free_gpus[: gpus_wanted(job)]
        free[runner.runner_id] = replace(
            runner,
            used_slots=runner.used_slots + 1,
            free_gpus=runner.free_gpus[len(taken) :],
        )
        placements.append(Placement(job.job_id, runner.runner_id, job.attempt + 1, taken))
    return placements
