"""Fair share: priority first, then the owner furthest below a dominant-resource share, then
FIFO; quotas hold an owner back with a reason that names them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from freight_server.services.scheduler.fairshare import (
    FairQueue,
    Quota,
    Totals,
    Usage,
    dominant_share,
)
from freight_server.shared.events import Event, EventType
from freight_server.shared.jobs import JobView, Outcome, Status
from tests.unit.test_scheduler_backlog import T0, scheduler_world

GPUS = [
    {"index": i, "uuid": f"GPU-{i}", "name": "Simulated GPU", "memory_mb": 16384} for i in (0, 1)
]


@pytest.fixture
def world(tmp_path):
    yield from scheduler_world(tmp_path)


def heartbeat(new_event) -> Event:
    return new_event(EventType.RUNNER_HEARTBEAT, None, runner="a", slots=8, gpus=GPUS)


def jobs(new_event, owner: str, n: int, **extra) -> list[Event]:
    return [
        new_event(
            EventType.JOB_SUBMITTED,
            f"{owner}-{i:02}",
            command="x",
            image="b",
            gpus=1,
            owner=owner,
            **extra,
        )
        for i in range(n)
    ]


def placed(log) -> list[str]:
    return [e.job_id for e in log.take(EventType.JOB_ASSIGNED)]


def finish(new_event, job_id: str) -> Event:
    return new_event(
        EventType.JOB_FINISHED, job_id, attempt=1, runner="a", outcome=Outcome.SUCCEEDED.value
    )


def test_a_second_owner_gets_the_next_free_gpu_before_the_first_owner_queue(world):
    projection, apply, new_event, log, clock, engine = world
    apply(projection, heartbeat(new_event), *jobs(new_event, "alice", 20))
    projection.place_queued_jobs()
    first = log.take(EventType.JOB_ASSIGNED)
    assert [e.job_id for e in first] == ["alice-00", "alice-01"]
    apply(projection, *first, *jobs(new_event, "bob", 5))
    projection.place_queued_jobs()
    assert placed(log) == []  # both GPUs busy

    apply(projection, finish(new_event, "alice-00"))
    projection.place_queued_jobs()
    assert placed(log) == ["bob-00"]  # bob holds nothing, alice half the cluster


def test_one_pass_interleaves_owners_as_it_fills_the_cluster(world):
    projection, apply, new_event, log, clock, engine = world
    apply(projection, *jobs(new_event, "alice", 3), *jobs(new_event, "bob", 3))
    apply(projection, heartbeat(new_event))
    projection.place_queued_jobs()
    assert placed(log) == ["alice-00", "bob-00"]


def test_a_higher_priority_passes_the_queue(world):
    projection, apply, new_event, log, clock, engine = world
    apply(projection, *jobs(new_event, "alice", 3), *jobs(new_event, "urgent", 1, priority=5))
    apply(projection, heartbeat(new_event))
    projection.place_queued_jobs()
    assert placed(log) == ["urgent-00", "alice-00"]


def test_an_owner_over_quota_waits_with_a_reason_naming_it(world):
    projection, apply, new_event, log, clock, engine = world
    quota = new_event(EventType.OWNER_QUOTA_SET, None, owner="alice", max_gpus=1, max_running=None)
    apply(projection, quota, heartbeat(new_event), *jobs(new_event, "alice", 3))
    clock.now += timedelta(seconds=2)
    projection.place_queued_jobs()
    events = log.take()
    assert [e.job_id for e in events if e.type == EventType.JOB_ASSIGNED] == ["alice-00"]
    reasons = {e.job_id: e.data["reason"] for e in events if e.type == EventType.JOB_WAITING}
    assert reasons["alice-01"] == "waiting for alice's quota max_gpus=1 (1 GPUs held)"

    apply(projection, new_event(EventType.OWNER_QUOTA_SET, None, owner="alice", max_running=2))
    apply(projection, *(e for e in events if e.type == EventType.JOB_ASSIGNED))
    projection.place_queued_jobs()
    assert placed(log) == ["alice-01"]  # max_gpus lifted; max_running=2 allows one more


def test_dominant_share_is_the_largest_fraction_held():
    totals = Totals(gpus=4, cpus=32.0, memory_mb=65536, slots=8)
    assert dominant_share(Usage(gpus=1, cpus=16.0, memory_mb=0, running=1), totals) == 0.5
    assert dominant_share(Usage(), totals) == 0.0
    assert dominant_share(Usage(running=2), Totals(0, 0.0, 0, 4)) == 0.5


def test_equal_shares_go_oldest_first_and_then_take_turns():
    def view(job_id: str, owner: str) -> JobView:
        return JobView(job_id, Status.QUEUED, "x", "b", T0, owner=owner)

    lanes = {
        (0, "bob"): [(2, view("b1", "bob")), (4, view("b2", "bob"))],
        (0, "alice"): [(1, view("a1", "alice")), (3, view("a2", "alice"))],
    }
    queue = FairQueue(lanes, {}, Totals(0, 0.0, 0, 4), {"carol": Quota(max_running=0)})
    order = []
    for job in queue:
        order.append(job.job_id)
        queue.placed(job)
    assert order == ["a1", "b1", "a2", "b2"]
