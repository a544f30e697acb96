"""A job the kernel's OOM killer ended is told so, even when the engine hears of the kill only
after the exit and leaves State.OOMKilled false (Docker 20.10 under load): the engine's own
`oom` event for the container is looked for. The real engine's side is in tests/e2e/test_gpus.py
(`test_limits_hold_in_a_real_container`), where this was seen to fail one run in a few."""

from __future__ import annotations

from typing import Any

import pytest

from freight_server.services.runner import executor as executor_module
from freight_server.services.runner.executor import DockerExecutor, ExitStatus


class FakeEngine:
    """The three calls `wait` makes, answering as the engine did when it missed the flag."""

    def __init__(self, exit_code: int, flagged: bool, memory: int, oom_event_after: int | None):
        self.exit_code, self.flagged, self.memory = exit_code, flagged, memory
        self.oom_event_after = oom_event_after  # the look-up that first sees it; None: never
        self.lookups: list[dict[str, Any]] = []

    def wait(self, container_id: str, timeout: Any = None) -> dict[str, Any]:
        return {"StatusCode": self.exit_code, "Error": None}

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {
            "State": {"OOMKilled": self.flagged, "StartedAt": "2026-11-29T13:40:01.123456789Z"},
            "HostConfig": {"Memory": self.memory},
        }

    def events(self, **asked: Any) -> list[dict[str, Any]]:
        self.lookups.append(asked)
        seen = self.oom_event_after is not None and len(self.lookups) >= self.oom_event_after
        return [{"Type": "container", "Action": "oom"}] if seen else []


class FakeClient:
    def __init__(self, api: FakeEngine):
        self.api = api


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(executor_module, "OOM_EVENT_WAIT", 0.0)


def wait(engine: FakeEngine) -> ExitStatus:
    return DockerExecutor(FakeClient(engine)).wait("c0ffee")  # type: ignore[arg-type]


def test_a_kill_the_engine_reported_only_as_an_event_is_out_of_memory():
    engine = FakeEngine(137, flagged=False, memory=32 << 20, oom_event_after=2)
    assert wait(engine) == ExitStatus(137, oom_killed=True)
    asked = engine.lookups[0]
    assert asked["filters"] == {"container": "c0ffee", "event": "oom"}
    assert asked["since"] == "1795959601"  # from the container's start


def test_a_sigkill_without_an_oom_event_stays_an_exit_code():
    engine = FakeEngine(137, flagged=False, memory=32 << 20, oom_event_after=None)
    assert wait(engine) == ExitStatus(137, oom_killed=False)
    assert len(engine.lookups) == executor_module.OOM_EVENT_TRIES


@pytest.mark.parametrize(
    ("exit_code", "flagged", "memory"),
    [(137, True, 32 << 20), (1, False, 32 << 20), (137, False, 0)],
    ids=["flagged by the engine", "not a SIGKILL", "no memory limit"],
)
def test_the_events_are_read_only_when_they_could_tell(exit_code, flagged, memory):
    engine = FakeEngine(exit_code, flagged, memory, oom_event_after=1)
    assert wait(engine).oom_killed is flagged
    assert engine.lookups == []
