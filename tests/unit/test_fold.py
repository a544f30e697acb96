"""The fold: every transition, duplicates, late and out-of-order events."""

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from freight_server.shared.events import Event, EventType
from freight_server.shared.jobs import JobView, Outcome, Status, evolve, fold

JOB = "7d1c1f9e-0000-4000-8000-000000000001"
_clock = count()


def ev(type: EventType, job_id: str | None = JOB, **data) -> Event:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(_clock))
    return Event(type=type.value, data=data, job_id=job_id, producer="test", occurred_at=at)


def submitted(**extra) -> Event:
    data = {"command": "echo hi", "image": "busybox", "gpus": None, "env": {}, "timeout": None}
    return ev(EventType.JOB_SUBMITTED, **{**data, **extra})


def assigned(attempt=1, runner="r1") -> Event:
    return ev(EventType.JOB_ASSIGNED, runner=runner, attempt=attempt, gpus=[])


def started(attempt=1) -> Event:
    return ev(EventType.JOB_STARTED, attempt=attempt, runner="r1")


def finished(attempt=1, outcome=Outcome.SUCCEEDED, exit_code=0, reason=None) -> Event:
    return ev(
        EventType.JOB_FINISHED,
        attempt=attempt,
        runner="r1",
        outcome=outcome.value,
        exit_code=exit_code,
        reason=reason,
    )


def cancel() -> Event:
    return ev(EventType.JOB_CANCEL_REQUESTED)


def test_submitted_job_is_queued_with_its_request():
    view = fold([submitted(gpus=2, env={"A": "1"}, timeout=5)])
    assert view.status == Status.QUEUED
    assert (view.command, view.image, view.gpus, dict(view.env), view.timeout) == (
        "echo hi",
        "busybox",
        2,
        {"A": "1"},
        5,
    )
    assert view.attempt == 0 and view.runner is None


def test_happy_path_queued_pending_running_complete():
    events = [submitted(), assigned(), started(), finished()]
    statuses = []
    view = None
    for event in events:
        view = evolve(view, event)
        statuses.append(view.status)
    assert statuses == [Status.QUEUED, Status.PENDING, Status.RUNNING, Status.COMPLETE]
    assert view.exit_code == 0 and view.reason is None
    assert view.runner == "r1" and view.attempt == 1
    assert view.created_at < view.assigned_at < view.started_at < view.finished_at


def test_non_zero_exit_fails_with_exit_code_as_reason():
    view = fold(
        [
            submitted(),
            assigned(),
            started(),
            finished(outcome=Outcome.FAILED, exit_code=3, reason="exit code 3"),
        ]
    )
    assert view.status == Status.FAILED
    assert view.exit_code == 3 and view.reason == "exit code 3"


@pytest.mark.parametrize("outcome", [Outcome.TIMED_OUT, Outcome.ERROR, Outcome.OUT_OF_MEMORY])
def test_other_endings_fail_with_their_reason(outcome):
    view = fold(
        [
            submitted(),
            assigned(),
            started(),
            finished(outcome=outcome, exit_code=None, reason=f"why: {outcome}"),
        ]
    )
    assert view.status == Status.FAILED and view.reason == f"why: {outcome}"
    assert view.outcome == outcome


def test_failure_before_start_ends_a_pending_job():
    view = fold(
        [
            submitted(),
            assigned(),
            finished(outcome=Outcome.ERROR, exit_code=None, reason="image missing"),
        ]
    )
    assert view.status == Status.FAILED and view.reason == "image missing"
    assert view.started_at is None


@pytest.mark.parametrize("before", [[], [assigned()]], ids=["queued", "pending"])
def test_cancel_of_queued_or_pending_job_fails_it_at_once(before):
    view = fold([submitted(), *before, cancel()])
    assert view.status == Status.FAILED and view.reason == "cancelled"
    assert view.finished_at is not None


def test_cancel_of_running_job_waits_for_the_runner():
    view = fold([submitted(), assigned(), started(), cancel()])
    assert view.status == Status.RUNNING and view.cancel_requested
    view = evolve(view, finished(outcome=Outcome.CANCELLED, exit_code=143, reason="cancelled"))
    assert view.status == Status.FAILED and view.reason == "cancelled" and view.exit_code == 143


def test_duplicates_change_nothing():
    events = [submitted(), assigned(), started(), finished()]
    doubled = [e for event in events for e in (event, event)]
    assert fold(doubled) == fold(events)


def test_second_submission_of_same_job_is_ignored():
    first = submitted(command="a")
    assert fold([first, submitted(command="b")]) == fold([first])


def test_first_assignment_wins():
    view = fold([submitted(), assigned(runner="r1"), assigned(runner="r2")])
    assert view.runner == "r1"


def test_late_events_after_the_end_are_ignored():
    life = [submitted(), assigned(), started(), finished()]
    late = [cancel(), started(), finished(outcome=Outcome.FAILED, exit_code=1), assigned(attempt=2)]
    assert fold(life + late) == fold(life)


def test_events_from_a_superseded_attempt_are_ignored():
    view = fold(
        [
            submitted(max_attempts=2),
            assigned(),
            started(),
            finished(outcome=Outcome.LOST, exit_code=None, reason="runner lost"),
            assigned(attempt=2, runner="r2"),
            started(attempt=1),
            finished(attempt=1, outcome=Outcome.SUCCEEDED),
        ]
    )
    assert view.status == Status.PENDING and view.attempt == 2 and view.runner == "r2"


def test_assignment_must_be_the_next_attempt():
    assert fold([submitted(), assigned(attempt=2)]).status == Status.QUEUED


def test_start_without_assignment_is_ignored():
    assert fold([submitted(), started()]).status == Status.QUEUED


def test_events_before_submission_are_ignored():
    assert fold([assigned(), started()]) is None
    assert fold([cancel(), submitted()]).status == Status.QUEUED


def test_lost_runner_fails_the_job_without_retries_left():
    view = fold(
        [
            submitted(),
            assigned(),
            started(),
            finished(outcome=Outcome.LOST, exit_code=None, reason="runner lost"),
        ]
    )
    assert view.status == Status.FAILED and view.reason == "runner lost"


def test_lost_runner_requeues_while_attempts_remain():
    view = fold(
        [
            submitted(max_attempts=3),
            assigned(),
            started(),
            finished(outcome=Outcome.LOST, exit_code=None, reason="runner lost"),
        ]
    )
    assert view.status == Status.QUEUED and view.attempt == 1 and view.runner is None
    assert "retrying" in view.reason


def test_cancelled_job_whose_runner_is_lost_is_not_retried():
    view = fold(
        [
            submitted(max_attempts=3),
            assigned(),
            started(),
            cancel(),
            finished(outcome=Outcome.LOST, exit_code=None, reason="runner lost"),
        ]
    )
    assert view.status == Status.FAILED and view.reason == "cancelled"
    assert view.outcome == Outcome.CANCELLED
    # Nor does a late assignment of the next attempt bring it back.
    assert evolve(view, assigned(attempt=2)) == view


def test_command_failure_is_never_retried():
    view = fold(
        [
            submitted(max_attempts=3),
            assigned(),
            started(),
            finished(outcome=Outcome.FAILED, exit_code=1, reason="exit code 1"),
        ]
    )
    assert view.status == Status.FAILED


def test_view_round_trips_through_its_stored_form():
    view = fold([submitted(env={"A": "b"}), assigned(), started(), cancel()])
    assert JobView.from_dict(view.to_dict()) == view


def test_runner_events_do_not_touch_jobs():
    view = fold([submitted()])
    assert evolve(view, ev(EventType.RUNNER_HEARTBEAT, None, runner="r1", slots=2)) == view


def waiting(reason: str) -> Event:
    return ev(EventType.JOB_WAITING, reason=reason)


def test_resources_asked_for_are_carried():
    view = fold([submitted(gpus=2, gpu_memory=40000, cpus=1.5, memory=2048)])
    assert (view.gpus, view.gpu_memory, view.cpus, view.memory) == (2, 40000, 1.5, 2048)


def test_waiting_job_says_why_until_it_is_assigned():
    view = fold([submitted(gpus=2), waiting("waiting for 2 GPUs; most free on one runner: 1")])
    assert view.status == Status.QUEUED
    assert view.reason == "waiting for 2 GPUs; most free on one runner: 1"
    view = fold([submitted(gpus=2), waiting("first"), waiting("second")])
    assert view.reason == "second"
    gpu = {"index": 0, "uuid": "GPU-1", "name": "Test", "memory_mb": 16384}
    view = evolve(view, ev(EventType.JOB_ASSIGNED, runner="r1", attempt=1, gpus=[gpu]))
    assert view.status == Status.PENDING and view.reason is None
    assert view.assigned_gpus == (gpu,)


def test_a_late_wait_reason_changes_nothing():
    life = [submitted(), assigned(), started()]
    assert fold([*life, waiting("too late")]) == fold(life)
    ended = [*life, finished()]
    assert fold([*ended, waiting("too late")]) == fold(ended)


def test_views_stored_before_resources_existed_still_load():
    stored = fold([submitted(), assigned()]).to_dict()
    for key in ("gpu_memory", "cpus", "memory"):
        del stored[key]
    view = JobView.from_dict(stored)
    assert (view.gpu_memory, view.cpus, view.memory) == (None, None, None)
    assert view.status == Status.PENDING
