"""The runner's chores run from its tick, but on a thread of their own and at most once per
interval: the tick's thread carries the broker's heartbeats and must never wait on them."""

from __future__ import annotations

import threading

from freight_server.services.runner.housekeeping import Housekeeping
from tests.waiting import wait_until


def test_chores_run_on_their_own_thread_once_per_interval():
    ran_on: list[threading.Thread] = []
    release = threading.Event()

    def slow_chore() -> None:
        ran_on.append(threading.current_thread())
        release.wait(10)

    housekeeping = Housekeeping([slow_chore], interval=3600)
    housekeeping.run_if_due()  # returns while the chore still runs
    wait_until(lambda: ran_on, what="the chore to start")
    housekeeping.run_if_due()
    release.set()
    wait_until(lambda: not housekeeping.running, what="the round to end")

    assert ran_on != [] and threading.current_thread() not in ran_on
    assert len(ran_on) == 1


def test_a_failing_chore_does_not_keep_the_next_from_running():
    done = threading.Event()

    def broken() -> None:
        raise RuntimeError("engine unreachable")

    Housekeeping([broken, done.set], interval=0).run_if_due()
    wait_until(done.is_set, what="the second chore")
