"""Placement rules: FIFO, slots, GPUs (by UUID and memory), CPUs, memory; best fit then least
loaded; and the reason a job that fits nowhere is given."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from freight_server.services.scheduler.placement import (
    RunnerCapacity,
    fits,
    has_enough_cpus,
    has_enough_gpus,
    has_enough_memory,
    place,
    waiting_reason,
)
from freight_server.shared.jobs import JobView, Status


def job(n: int, gpus: int | None = None, **resources) -> JobView:
    return JobView(
        job_id=f"job-{n}",
        status=Status.QUEUED,
        command="true",
        image="busybox",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        gpus=gpus,
        **resources,
    )


def gpus(runner: str, n: int, memory_mb: int = 16384):
    return tuple(
        {"index": i, "uuid": f"{runner}-gpu-{i}", "name": "Test GPU", "memory_mb": memory_mb}
        for i in range(n)
    )


def placed(queued, runners):
    return place(queued, runners).placements


def test_fifo_fills_free_slots_and_stops_when_full():
    placements = placed([job(1), job(2), job(3)], [RunnerCapacity("r1", slots=2)])
    assert [p.job_id for p in placements] == ["job-1", "job-2"]
    assert all(p.attempt == 1 and p.runner_id == "r1" for p in placements)


def test_no_runners_no_placements():
    plan = place([job(1)], [])
    assert plan.placements == []
    assert plan.waiting == {"job-1": "waiting for a runner to join"}


def test_least_loaded_runner_first():
    runners = [RunnerCapacity("r1", slots=4, used_slots=3), RunnerCapacity("r2", slots=4)]
    assert placed([job(1)], runners)[0].runner_id == "r2"


def test_gpu_job_needs_enough_free_gpus_on_one_runner():
    runners = [RunnerCapacity("a", 4, gpus("a", 1)), RunnerCapacity("b", 4, gpus("b", 1))]
    assert not fits(job(1, gpus=2), runners[0])
    plan = place([job(1, gpus=2)], runners)
    assert plan.placements == []
    assert plan.waiting["job-1"] == (
        "no runner has 2 GPUs (most on one runner: 1); waiting for one that does to join"
    )


def test_best_fit_leaves_fewest_gpus_stranded():
    runners = [
        RunnerCapacity("big", 4, gpus("big", 4)),
        RunnerCapacity("small", 4, gpus("small", 1)),
    ]
    [p] = placed([job(1, gpus=1)], runners)
    assert p.runner_id == "small" and [g["uuid"] for g in p.gpus] == ["small-gpu-0"]


def test_cpu_jobs_prefer_runners_without_gpus():
    runners = [RunnerCapacity("gpu", 4, gpus("gpu", 2)), RunnerCapacity("cpu", 4)]
    assert placed([job(1)], runners)[0].runner_id == "cpu"


def test_gpus_are_never_given_twice():
    runners = [RunnerCapacity("a", 8, gpus("a", 3))]
    plan = place([job(i, gpus=1) for i in range(5)], runners)
    given = [g["uuid"] for p in plan.placements for g in p.gpus]
    assert len(plan.placements) == 3 and len(set(given)) == 3
    assert plan.waiting == {
        "job-3": "waiting for 1 GPU; most free on one runner: 0",
        "job-4": "waiting for 1 GPU; most free on one runner: 0",
    }


def test_held_gpus_are_not_free():
    runner = RunnerCapacity("a", 8, gpus("a", 2), held_gpus=frozenset({"a-gpu-0"}))
    [p] = placed([job(1, gpus=1)], [runner])
    assert [g["uuid"] for g in p.gpus] == ["a-gpu-1"]


def test_two_runners_three_gpus_four_jobs():
    """The issue's example: 2 GPUs + 1 GPU, four 1-GPU jobs: three run, on distinct GPUs."""
    runners = [RunnerCapacity("a", 4, gpus("a", 2)), RunnerCapacity("b", 4, gpus("b", 1))]
    plan = place([job(i, gpus=1) for i in range(4)], runners)
    given = [g["uuid"] for p in plan.placements for g in p.gpus]
    assert sorted(given) == ["a-gpu-0", "a-gpu-1", "b-gpu-0"]
    assert plan.placements[0].runner_id == "b"  # best fit: nothing stranded on b
    assert plan.waiting == {"job-3": "waiting for 1 GPU; most free on one runner: 0"}


def test_gpu_memory_only_counts_gpus_with_enough():
    mixed = (
        {"index": 0, "uuid": "small", "name": "x", "memory_mb": 8000},
        {"index": 1, "uuid": "big", "name": "x", "memory_mb": 80000},
    )
    runner = RunnerCapacity("a", 4, mixed)
    [p] = placed([job(1, gpus=1, gpu_memory=40000)], [runner])
    assert [g["uuid"] for g in p.gpus] == ["big"]
    assert not has_enough_gpus(job(2, gpus=2, gpu_memory=40000), runner)


def test_smallest_sufficient_gpu_is_taken_first():
    mixed = (
        {"index": 0, "uuid": "big", "name": "x", "memory_mb": 80000},
        {"index": 1, "uuid": "small", "name": "x", "memory_mb": 16000},
    )
    [p] = placed([job(1, gpus=1)], [RunnerCapacity("a", 4, mixed)])
    assert p.gpus[0]["uuid"] == "small"


@pytest.mark.parametrize(
    "rule, request_, fitting, too_big",
    [
        (has_enough_cpus, {"cpus": 2.0}, {"cpus": 4.0, "used_cpus": 2.0}, {"cpus": 4.0, "used_cpus": 2.5}),  # noqa: E501
        (has_enough_memory, {"memory": 512}, {"memory_mb": 1024, "used_memory_mb": 512}, {"memory_mb": 1024, "used_memory_mb": 513}),  # noqa: E501
    ],
)  # fmt: skip
def test_cpu_and_memory_rules(rule, request_, fitting, too_big):
    assert rule(job(1, **request_), RunnerCapacity("r", 4, **fitting))
    assert not rule(job(1, **request_), RunnerCapacity("r", 4, **too_big))
    assert rule(job(1), RunnerCapacity("r", 4, **too_big))  # a job that asks nothing fits


def test_fractional_cpus_add_up_exactly():
    runner = RunnerCapacity("r", 8, cpus=0.3)
    assert len(placed([job(1, cpus=0.1), job(2, cpus=0.2)], [runner])) == 2


def test_cpus_and_memory_are_never_overcommitted():
    runner = RunnerCapacity("r", 100, cpus=4.0, memory_mb=4096)
    queued = [job(i, cpus=1.5, memory=1000) for i in range(5)]
    plan = place(queued, [runner])
    assert len(plan.placements) == 2  # 3 x 1.5 CPUs > 4
    assert plan.waiting["job-2"] == "waiting for 1.5 CPUs; most free on one runner: 1"
    memory_bound = place([job(i, memory=1500) for i in range(5)], [runner])
    assert len(memory_bound.placements) == 2
    assert memory_bound.waiting["job-2"] == (
        "waiting for 1500 MiB of memory; most free on one runner: 1096 MiB"
    )


def test_a_later_small_job_may_pass_a_waiting_big_one():
    runner = RunnerCapacity("r", 4, gpus("r", 1))
    plan = place([job(1, gpus=2), job(2, gpus=1)], [runner])
    assert [p.job_id for p in plan.placements] == ["job-2"]


def test_placed_resources_are_recorded_for_the_next_pass():
    [p] = placed([job(1, gpus=1, cpus=2, memory=100)], [RunnerCapacity("r", 4, gpus("r", 1))])
    assert (p.cpus, p.memory_mb, len(p.gpus)) == (2, 100, 1)


def test_unreported_cpus_and_memory_are_not_counted():
    assert fits(job(1, cpus=64, memory=1 << 20), RunnerCapacity("old", 4))


@pytest.mark.parametrize(
    "queued, runners, reason",
    [
        (
            job(1, gpus=3),
            [RunnerCapacity("a", 4, gpus("a", 2)), RunnerCapacity("b", 4, gpus("b", 1))],
            "no runner has 3 GPUs (most on one runner: 2); waiting for one that does to join",
        ),
        (
            job(1, gpus=2),
            [RunnerCapacity("a", 4, gpus("a", 2), held_gpus=frozenset({"a-gpu-0"}))],
            "waiting for 2 GPUs; most free on one runner: 1",
        ),
        (
            job(1, gpus=1, gpu_memory=40000),
            [RunnerCapacity("a", 4, gpus("a", 2))],
            "no runner has 1 GPU with 40000 MiB (most on one runner: 0); "
            "waiting for one that does to join",
        ),
        (
            job(1, cpus=16),
            [RunnerCapacity("a", 4, cpus=8.0)],
            "no runner has 16 CPUs (most on one runner: 8); waiting for one that does to join",
        ),
        (
            job(1),
            [RunnerCapacity("a", 1, used_slots=1), RunnerCapacity("b", 2, used_slots=2)],
            "waiting for a free slot; every runner is busy",
        ),
        (
            job(1, gpus=1, cpus=4),
            [RunnerCapacity("a", 4, gpus("a", 1), cpus=2.0), RunnerCapacity("b", 4, cpus=8.0)],
            "no runner has 1 GPU and 4 CPUs at once; waiting for one that does to join",
        ),
        (
            job(1, gpus=1, cpus=4),
            [
                RunnerCapacity("a", 4, gpus("a", 1), cpus=8.0, used_cpus=6.0),
                RunnerCapacity("b", 4, gpus("b", 1), cpus=8.0, held_gpus=frozenset({"b-gpu-0"})),
            ],
            "waiting for 1 GPU and 4 CPUs at once on one runner",
        ),
    ],
    ids=["never-gpus", "gpus-now", "gpu-memory", "never-cpus", "slots", "never-both", "now-both"],
)  # fmt: skip
def test_waiting_reasons_read_like_a_person_wrote_them(queued, runners, reason):
    assert not any(fits(queued, r) for r in runners)
    assert waiting_reason(queued, runners) == reason


def test_next_attempt_is_numbered_from_the_view():
    requeued = replace(job(1), attempt=1, max_attempts=2)
    assert placed([requeued], [RunnerCapacity("r", 1)])[0].attempt == 2
