"""Placement rules: FIFO, slots, GPUs, best fit then least loaded."""

from datetime import UTC, datetime

from services.scheduler.placement import RunnerCapacity, fits, place
from shared.jobs import JobView, Status


def job(n: int, gpus: int | None = None) -> JobView:
    return JobView(
        job_id=f"job-{n}",
        status=Status.QUEUED,
        command="true",
        image="busybox",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        gpus=gpus,
    )


def gpus(runner: str, n: int):
    return tuple({"index": i, "uuid": f"{runner}-gpu-{i}"} for i in range(n))


def test_fifo_fills_free_slots_and_stops_when_full():
    placements = place([job(1), job(2), job(3)], [RunnerCapacity("r1", slots=2)])
    assert [p.job_id for p in placements] == ["job-1", "job-2"]
    assert all(p.attempt == 1 and p.runner_id == "r1" for p in placements)


def test_no_runners_no_placements():
    assert place([job(1)], []) == []


def test_least_loaded_runner_first():
    runners = [RunnerCapacity("r1", slots=4, used_slots=3), RunnerCapacity("r2", slots=4)]
    assert place([job(1)], runners)[0].runner_id == "r2"


def test_gpu_job_needs_enough_free_gpus_on_one_runner():
    runners = [
        RunnerCapacity("a", 4, free_gpus=gpus("a", 1)),
        RunnerCapacity("b", 4, free_gpus=gpus("b", 1)),
    ]
    assert not fits(job(1, gpus=2), runners[0])
    assert place([job(1, gpus=2)], runners) == []


def test_best_fit_leaves_fewest_gpus_stranded():
    runners = [
        RunnerCapacity("big", 4, free_gpus=gpus("big", 4)),
        RunnerCapacity("small", 4, free_gpus=gpus("small", 1)),
    ]
    [p] = place([job(1, gpus=1)], runners)
    assert p.runner_id == "small" and [g["uuid"] for g in p.gpus] == ["small-gpu-0"]


def test_cpu_jobs_prefer_runners_without_gpus():
    runners = [RunnerCapacity("gpu", 4, free_gpus=gpus("gpu", 2)), RunnerCapacity("cpu", 4)]
    assert place([job(1)], runners)[0].runner_id == "cpu"


def test_gpus_are_never_given_twice():
    runners = [RunnerCapacity("a", 8, free_gpus=gpus("a", 3))]
    placements = place([job(i, gpus=1) for i in range(5)], runners)
    given = [g["uuid"] for p in placements for g in p.gpus]
    assert len(placements) == 3 and len(set(given)) == 3


def test_next_attempt_is_numbered_from_the_view():
    requeued = JobView(
        job_id="j",
        status=Status.QUEUED,
        command="true",
        image="b",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempt=1,
        max_attempts=2,
    )
    assert place([requeued], [RunnerCapacity("r", 1)])[0].attempt == 2
