"""The container spec a runner builds for an attempt: what the engine would be asked for."""

from __future__ import annotations

from typing import Any

from freight_server.services.runner.attempt import Attempt, AttemptControl, RunnerContext
from freight_server.services.runner.executor import ContainerSpec
from freight_server.shared.events import EventFactory
from freight_server.shared.jobs import JobView


def spec_for(job: JobView, **context: Any) -> ContainerSpec:
    """The spec for an attempt of `job` on a runner with this context (`secrets`,
    `simulated_gpus`, …); building it touches no engine."""
    ctx = RunnerContext(
        runner_id="r",
        namespace="test",
        executor=None,  # type: ignore[arg-type]
        log=None,
        new_event=EventFactory("test"),
        network="none",
        workdir="/job",
        stop_grace=1.0,
        **context,
    )
    return Attempt(job, ctx, AttemptControl(), lambda _: None)._spec()
