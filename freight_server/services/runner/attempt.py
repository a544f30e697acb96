"""One attempt of one job, from container to end; its JobFinished is always emitted."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from freight_server.services.runner.executor import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_NAMESPACE,
    LABEL_RUNNER,
    Attached,
    ContainerSpec,
    ContainerState,
    Executor,
    ExecutorError,
    ExitStatus,
    NameTaken,
)
from freight_server.shared.bus import BrokerUnavailable
from freight_server.shared.events import Event, EventFactory, EventType, utcnow
from freight_server.shared.jobs import JobView, Outcome, Status
from freight_server.shared.secret_env import SecretBox, SecretUnavailable, open_secret_env

if TYPE_CHECKING:
    from freight_server.services.runner.files import AttemptFiles
    from freight_server.services.runner.logs import OutputShipper

log = logging.getLogger(__name__)

# A stop the engine failed (an error, a timeout) is tried again after this, doubling up to the
# cap, until the container's exit is seen: a cancelled or timed-out job must not keep running.
STOP_RETRY_FIRST = 0.5
STOP_RETRY_MAX = 10.0


@dataclass(frozen=True)
class RunnerContext:
    runner_id: str
    namespace: str
    executor: Executor
    log: Any  # the event log: append(*events), confirmed
    new_event: EventFactory
    network: str
    workdir: str
    stop_grace: float
    simulated_gpus: bool = False  # FREIGHT_RUNNER_GPUS: name them to the job, attach nothing
    # Inputs in, outputs out (freight_server/services/runner/files.py).
    files: AttemptFiles | None = None
    secrets: SecretBox | None = None  # opens jobs' secret_env (FREIGHT_SECRET_KEY)
    images_used: Callable[[str], None] | None = None  # a job of ours used this image now


class AttemptControl:
    """The runner's handle on a live attempt: it may be asked to stop, once, with a reason."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.stop_outcome: Outcome | None = None
        self.stop_reason: str | None = None

    def request_stop(self, outcome: Outcome, reason: str) -> None:
        if self.stop_outcome is None:
            self.stop_outcome, self.stop_reason = outcome, reason
            self.wake.set()

    @property
    def stop_requested(self) -> bool:
        return self.stop_outcome is not None


@dataclass
class Ending:
    outcome: Outcome
    reason: str | None = None
    exit_code: int | None = None


def container_name(namespace: str, job_id: str, attempt: int) -> str:
    return f"{namespace}-{job_id}-{attempt}"


class Attempt:
    def __init__(
        self,
        job: JobView,
        ctx: RunnerContext,
        control: AttemptControl,
        on_done: Callable[[Attempt], None],
        adopt: bool = False,
    ):
        self.job = job
        # Launched before a restart: follow its container; make one only if the log says it
        # never started (the runner died before the container existed, e.g. pulling its image).
        self.adopt = adopt
        self.attempt = job.attempt
        self._ctx = ctx
        self.control = control
        self._on_done = on_done
        self._shipper: OutputShipper | None = None  # its output, on its way to the filestore

    def run(self) -> None:
        ctx = self._ctx
        container_id = None
        started = False
        ending = Ending(Outcome.ERROR, "freight error: the attempt ended unexpectedly")
        try:
            spec = self._spec()
            # The container's name is unique per attempt: this is what makes a start at most once.
            container = self._container(spec)
            container_id = container.container_id
            if self.control.stop_requested:
                ending = self._stopped_ending(exit_code=None)
                return
            attached = None
            if not container.started:
                self._place_inputs(container_id)
                attached = self._start(container_id)
            started = True
            exited = self._watch_exit(container_id)
            if ctx.files is not None:
                self._shipper = ctx.files.ship_output(container_id, self.job, self.adopt, attached)
            # Once the container runs, its start must reach the log, even through an outage.
            told = self._emit(EventType.JOB_STARTED, always=True, container=container_id[:12])
            ending = self._supervise(container_id, exited, self._started_at(told))
        except ExecutorError as exc:
            ending = Ending(Outcome.ERROR, f"freight error: {exc}")
        except Exception as exc:  # noqa: BLE001 - any bug here must still end the job
            log.exception("attempt %s/%d crashed", self.job.job_id, self.attempt)
            ending = Ending(Outcome.ERROR, f"freight error: {exc!r}")
        finally:
            outputs = None
            if started and container_id is not None:
                ending, outputs = self._save_outputs(container_id, ending)
            self._finish(ending, outputs)
            if container_id is not None:
                ctx.executor.remove(container_id)
            self._on_done(self)

    def _start(self, container_id: str) -> Attached | None:
        """Start the container, attached to its output first so that none of it is missed."""
        attached = self._ctx.files.attach_output(container_id) if self._ctx.files else None
        try:
            self._ctx.executor.start(container_id)
        except BaseException:
            if attached is not None:
                attached.close()
            raise
        return attached

    def _container(self, spec: ContainerSpec) -> ContainerState:
        """The attempt's container: an adopted attempt's is looked for first; a new attempt's is
        created at once, and only a name already taken (a replay after a crash between create
        and the start's record) sends us looking for the one made before."""
        if self.adopt:
            found = self._ctx.executor.find(spec.name)
            if found is not None:
                return found
            if self.job.status != Status.PENDING:
                # It ran: making it again would run the command twice.
                raise ExecutorError("its container vanished while the runner was away")
            log.info("job %s attempt %d has no container yet: creating it", *self._key)
        container = self._create(spec)
        if self._ctx.images_used is not None:
            self._ctx.images_used(spec.image)
        return container

    def _create(self, spec: ContainerSpec) -> ContainerState:
        executor = self._ctx.executor
        try:
            container_id = executor.create(spec)
        except NameTaken:
            found = executor.find(spec.name)
            if found is None:
                raise ExecutorError(f"container {spec.name} vanished as it was created") from None
            return found
        return ContainerState(container_id, started=False)

    @property
    def _key(self) -> tuple[str, int]:
        return self.job.job_id, self.attempt

    def _spec(self) -> ContainerSpec:
        ctx = self._ctx
        try:
            # Opened only here, for the container: never logged, never in an event.
            secrets = open_secret_env(ctx.secrets, self.job.secret_env)
        except SecretUnavailable as exc:
            raise ExecutorError(str(exc)) from None
        return ContainerSpec(
            name=container_name(ctx.namespace, self.job.job_id, self.attempt),
            image=self.job.image,
            command=self.job.command,
            env={**self.job.env, **secrets},
            labels={
                LABEL_JOB: self.job.job_id,
                LABEL_ATTEMPT: str(self.attempt),
                LABEL_RUNNER: ctx.runner_id,
                LABEL_NAMESPACE: ctx.namespace,
            },
            workdir=ctx.workdir,
            network=ctx.network,
            gpus=tuple(str(g["uuid"]) for g in self.job.assigned_gpus),
            simulated_gpus=ctx.simulated_gpus,
            cpus=self.job.cpus,
            memory_mb=self.job.memory,
        )

    def _watch_exit(self, container_id: str) -> dict[str, ExitStatus | Exception]:
        """Wait for the container's exit on a thread of its own, from the moment it started (a
        short job may be done before its start is told); `control.wake` is set when it comes."""
        exited: dict[str, ExitStatus | Exception] = {}

        def wait_for_exit() -> None:
            try:
                exited["status"] = self._ctx.executor.wait(container_id)
            except Exception as exc:  # noqa: BLE001 - handed to the supervising thread
                exited["status"] = exc
            self.control.wake.set()

        threading.Thread(
            target=wait_for_exit, name=f"wait-{container_id[:12]}", daemon=True
        ).start()
        return exited

    def _started_at(self, told: Event) -> datetime:
        """When the log says the attempt started: a re-adopted attempt's first JobStarted (what
        we tell again is a duplicate the fold ignores), else the one just told."""
        if self.job.status == Status.RUNNING and self.job.started_at is not None:
            return self.job.started_at
        return told.occurred_at

    def _deadline(self, started_at: datetime) -> float | None:
        """The timeout counts from the start the log records, so a runner's restart neither
        resets nor stretches it; as a monotonic time, which wall-clock jumps leave alone."""
        if not self.job.timeout:
            return None
        left = self.job.timeout - (utcnow() - started_at).total_seconds()
        return time.monotonic() + left

    def _supervise(
        self, container_id: str, exited: dict[str, ExitStatus | Exception], started_at: datetime
    ) -> Ending:
        """Wait for the exit, a stop request or the timeout, whichever comes first.

        `container.wait` is only an HTTP read; the run deadline is enforced here.
        """
        deadline = self._deadline(started_at)
        while "status" not in exited:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.control.wake.wait(remaining)
            self.control.wake.clear()
            if "status" in exited:
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.control.request_stop(
                    Outcome.TIMED_OUT, f"timed out after {self.job.timeout:g}s"
                )
            if self.control.stop_requested:
                self._stop_until_exited(container_id, exited)
        status = exited["status"]
        if isinstance(status, Exception):
            raise status
        if self.control.stop_requested:
            return self._stopped_ending(status.exit_code)
        if status.oom_killed:
            return Ending(Outcome.OUT_OF_MEMORY, "out of memory", status.exit_code)
        if status.exit_code == 0:
            return Ending(Outcome.SUCCEEDED, None, 0)
        return Ending(Outcome.FAILED, f"exit code {status.exit_code}", status.exit_code)

    def _stop_until_exited(
        self, container_id: str, exited: dict[str, ExitStatus | Exception]
    ) -> None:
        """Stop the container, again and again with a growing pause, until its exit is seen:
        one failed stop (an engine error, a timeout) must not leave a cancelled job running."""
        pause = STOP_RETRY_FIRST
        while "status" not in exited:
            try:
                self._ctx.executor.stop(container_id, self._ctx.stop_grace)
            except ExecutorError as exc:
                log.warning("stopping job %s attempt %d failed, will retry: %s", *self._key, exc)
            # The exit watcher sets `wake` when the container is gone.
            self.control.wake.wait(pause)
            self.control.wake.clear()
            pause = min(pause * 2, STOP_RETRY_MAX)

    def _place_inputs(self, container_id: str) -> None:
        if self.job.files and self._ctx.files is None:
            raise ExecutorError("this runner cannot put input files in place")
        if self._ctx.files is not None:
            self._ctx.files.place_inputs(container_id, self.job)

    def _save_outputs(self, container_id: str, ending: Ending) -> tuple[Ending, Event | None]:
        """Whatever the outcome, keep what the job wrote before its container goes; returns the
        ending (a failure to save turns success into ERROR) and the JobOutputsSaved to tell."""
        if self._ctx.files is None:
            return ending, None
        try:
            saved = self._ctx.files.save_outputs(container_id, self.job, self._shipper)
        except Exception:  # noqa: BLE001 - the job must still end
            log.exception("saving the outputs of %s/%d crashed", self.job.job_id, self.attempt)
            return ending, None
        outputs = self._event(EventType.JOB_OUTPUTS_SAVED, **saved.event_data())
        if saved.error and ending.outcome == Outcome.SUCCEEDED:
            # The user's results are lost: the job did not complete, by our fault.
            return Ending(Outcome.ERROR, f"freight error: {saved.error}", ending.exit_code), outputs
        return ending, outputs

    def _stopped_ending(self, exit_code: int | None) -> Ending:
        outcome = self.control.stop_outcome or Outcome.CANCELLED
        return Ending(outcome, self.control.stop_reason or outcome.value, exit_code)

    def _finish(self, ending: Ending, outputs: Event | None) -> None:
        log.info(
            "job %s attempt %d ended: %s (%s)",
            self.job.job_id,
            self.attempt,
            ending.outcome.value,
            ending.reason or f"exit code {ending.exit_code}",
        )
        finished = self._event(
            EventType.JOB_FINISHED,
            exit_code=ending.exit_code,
            outcome=ending.outcome.value,
            reason=ending.reason,
        )
        # One append, one confirm: what it saved, then that it ended.
        self._tell([outputs, finished] if outputs else [finished], always=True)

    def _emit(self, type: EventType, always: bool = False, **data: Any) -> Event:
        event = self._event(type, **data)
        self._tell([event], always)
        return event

    def _event(self, type: EventType, **data: Any) -> Event:
        return self._ctx.new_event(
            type, self.job.job_id, attempt=self.attempt, runner=self._ctx.runner_id, **data
        )

    def _tell(self, events: list[Event], always: bool) -> None:
        backoff = 0.2
        while True:
            try:
                self._ctx.log.append(*events)
                return
            except BrokerUnavailable as exc:
                what = ", ".join(e.type for e in events)
                if not always:
                    raise ExecutorError(f"could not record {what}: {exc}") from None
                # Keep trying until the broker is back: the fact happened and must be told.
                log.warning("retrying %s for job %s: %s", what, self.job.job_id, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
