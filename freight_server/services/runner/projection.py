"""The runner: folds the log, launches the attempts assigned to it, stops the ones that are no
longer wanted, and reports its capacity in heartbeats.

Launch and stop decisions wait until the runner has read back its own RunnerStarted: by then
it has replayed everything before it, so a restart never acts on an assignment that a later
event already ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.runner import schema
from freight_server.services.runner.attempt import Attempt, AttemptControl, RunnerContext
from freight_server.services.runner.executor import (
    LABEL_ATTEMPT,
    LABEL_JOB,
    LABEL_NAMESPACE,
    LABEL_RUNNER,
    ExecutorError,
)
from freight_server.services.runner.gpus import HostResources
from freight_server.services.runner.housekeeping import Housekeeping
from freight_server.shared.bus import BrokerUnavailable
from freight_server.shared.consumer import Logged
from freight_server.shared.db import kept_until_committed
from freight_server.shared.events import EventType
from freight_server.shared.jobs import ACTIVE, JobView, Outcome, Status
from freight_server.shared.views import ViewCache, fold_views, view_columns, write_views

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 30.0  # seconds between looks for orphaned containers
_TOUCHED = "runner.touched"  # session.info key: the views of ours a transaction changed


class RunnerProjection:
    start_at = "first"
    offsets = schema.offsets
    dead_letters = schema.dead_letters

    def __init__(
        self,
        engine: sa.Engine,
        ctx: RunnerContext,
        slots: int,
        heartbeat_interval: float,
        clock: Callable[[], datetime],
        resources: HostResources | None = None,
        housekeeping: Housekeeping | None = None,
    ):
        self.consumer = f"runner:{ctx.runner_id}"
        self._engine = engine
        self._ctx = ctx
        self._slots = slots
        self._resources = resources or HostResources.without_gpus()
        self._heartbeat_interval = heartbeat_interval
        self._clock = clock
        self._next_heartbeat = 0.0
        self._live: dict[tuple[str, int], Attempt] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        self._marker: str | None = None  # our RunnerStarted's id
        self._housekeeping = housekeeping
        self.caught_up = False
        # The committed views of ours that batches changed since the last reconcile: what the
        # next one acts on. None: a transaction rolled back, so the next looks at every job.
        self._touched: dict[str, JobView] | None = {}
        self._views = ViewCache()  # our views of the jobs as our batches last committed them

    # -- projection ------------------------------------------------------------------------

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        if any(event.event_id == self._marker for event, _ in batch):
            self.caught_up = True
        me = self._ctx.runner_id
        changes = fold_views(session, schema.jobs, batch, {"projector": me}, self._views)
        write_views(session, schema.jobs, changes, view_columns, {"projector": me})
        with self._lock:
            live = {job_id for job_id, _ in self._live}
        touched = kept_until_committed(session, _TOUCHED, self._learn, self._forget)
        touched.extend(
            change.after
            for change in changes
            if change.after.runner == me or change.after.job_id in live
        )

    def _learn(self, views: list[JobView]) -> None:
        if not self.caught_up:
            self._touched = None  # a replay: the first decisions look at every job
        elif self._touched is not None:
            self._touched.update((view.job_id, view) for view in views)

    def _forget(self) -> None:
        self._touched = None

    # -- decisions -------------------------------------------------------------------------

    def after_batch(self, caught_up: bool) -> None:
        # Only the jobs a batch assigned us or touched among ours can change what should run
        # here: the others are every other runner's business (the tick reconciles them all).
        if not self.caught_up:
            return
        if self._touched is None:
            self.reconcile()
        elif self._touched:
            self._act_on(list(self._touched.values()))
            self._touched = {}

    def tick(self) -> None:
        if self._marker is None:
            self.announce_start()
        if time.monotonic() >= self._next_heartbeat:
            self.send_heartbeat()
        if self.caught_up:
            self.reconcile()
        if self._housekeeping is not None:
            self._housekeeping.run_if_due()

    def _act_on(self, views: list[JobView]) -> None:
        """What the batches since the last reconcile changed, as committed: stop the live
        attempts they no longer want, launch what they assigned us."""
        changed = {view.job_id: view for view in views}
        with self._lock:
            live = [a for a in self._live.values() if a.job.job_id in changed]
        for attempt in live:
            self._stop_if_unwanted(attempt, changed[attempt.job.job_id])
        me = self._ctx.runner_id
        for view in views:
            if view.runner == me and view.status in ACTIVE:
                self._launch(view)

    def reconcile(self) -> None:
        """Make the running attempts match the log: launch what is ours, stop what is not."""
        self._touched = {}
        jobs = schema.jobs
        wanted = sa.select(jobs.c.view).where(
            jobs.c.projector == self._ctx.runner_id,
            jobs.c.runner == self._ctx.runner_id,
            jobs.c.status.in_([s.value for s in ACTIVE]),
        )
        with self._engine.connect() as connection:
            assigned = [JobView.from_dict(v) for v in connection.execute(wanted).scalars()]
            with self._lock:
                live = list(self._live.values())
            current = (
                {
                    row.job_id: JobView.from_dict(row.view)
                    for row in connection.execute(
                        sa.select(schema.jobs.c.job_id, schema.jobs.c.view).where(
                            schema.jobs.c.projector == self._ctx.runner_id,
                            schema.jobs.c.job_id.in_([a.job.job_id for a in live]),
                        )
                    )
                }
                if live
                else {}
            )
        for attempt in live:
            self._stop_if_unwanted(attempt, current.get(attempt.job.job_id))
        for job in assigned:
            self._launch(job)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL
            self.remove_orphans({job.job_id: job for job in assigned})

    def remove_orphans(self, assigned: dict[str, JobView]) -> None:
        """Remove this runner's containers that no attempt follows and none will: left behind
        by a crash between an attempt's end and its clean-up, or superseded while it was away."""
        labels = {LABEL_NAMESPACE: self._ctx.namespace, LABEL_RUNNER: self._ctx.runner_id}
        try:
            containers = self._ctx.executor.labelled(labels)
        except ExecutorError as exc:
            log.warning("could not look for orphaned containers: %s", exc)
            return
        with self._lock:
            live = set(self._live)
        for container_id, own in containers:
            job_id, attempt = own.get(LABEL_JOB, ""), int(own.get(LABEL_ATTEMPT, "0") or 0)
            wanted = assigned.get(job_id)
            if (job_id, attempt) in live or (wanted and wanted.attempt == attempt):
                continue
            log.info("removing orphaned container of job %s attempt %d", job_id, attempt)
            self._ctx.executor.remove(container_id)

    def _stop_if_unwanted(self, attempt: Attempt, view: JobView | None) -> None:
        if view is None:
            return
        if view.attempt != attempt.attempt or view.runner != self._ctx.runner_id:
            attempt.control.request_stop(Outcome.CANCELLED, "superseded by another attempt")
        elif view.cancel_requested or view.status.is_terminal:
            attempt.control.request_stop(Outcome.CANCELLED, "cancelled")

    def _launch(self, job: JobView) -> None:
        key = (job.job_id, job.attempt)
        with self._lock:
            if key in self._live:
                return
        with self._engine.begin() as connection:
            launched = connection.execute(
                _ATTEMPT_FINISHED, {"job": job.job_id, "number": job.attempt}
            ).first()
            if launched is not None and launched.finished_at is not None:
                return
            if launched is None:
                connection.execute(
                    _LAUNCHED,
                    {
                        "job_id": job.job_id,
                        "attempt": job.attempt,
                        "runner_id": self._ctx.runner_id,
                        "launched_at": self._clock(),
                    },
                )
        attempt = Attempt(
            job,
            self._ctx,
            AttemptControl(),
            self._attempt_done,
            adopt=launched is not None or job.status == Status.RUNNING,
        )
        with self._lock:
            self._live[key] = attempt
        log.info("launching job %s attempt %d", job.job_id, job.attempt)
        threading.Thread(
            target=attempt.run, name=f"attempt-{job.job_id[:8]}-{job.attempt}", daemon=True
        ).start()

    def _attempt_done(self, attempt: Attempt) -> None:
        # Recorded as finished before it leaves the live set: in between, a reconcile would
        # take it for a container to re-adopt.
        with self._engine.begin() as connection:
            connection.execute(
                _FINISHED,
                {"job": attempt.job.job_id, "number": attempt.attempt, "at": self._clock()},
            )
        with self._lock:
            self._live.pop((attempt.job.job_id, attempt.attempt), None)

    def announce_start(self) -> None:
        """Launch and stop decisions wait until this is read back: the log before it has been
        replayed, so no attempt is launched that a later event already ended."""
        started = self._ctx.new_event(EventType.RUNNER_STARTED, None, runner=self._ctx.runner_id)
        try:
            self._ctx.log.append(started)
        except BrokerUnavailable as exc:
            log.warning("could not announce the runner's start: %s", exc)
            return
        self._marker = started.event_id

    def send_heartbeat(self) -> None:
        with self._lock:
            live = list(self._live.values())
        heartbeat = self._ctx.new_event(
            EventType.RUNNER_HEARTBEAT,
            None,
            runner=self._ctx.runner_id,
            running=[f"{a.job.job_id}/{a.attempt}" for a in live],
            **self._resources.report(self._slots, [a.job for a in live]),
        )
        try:
            self._ctx.log.send_heartbeat(heartbeat)
            self._next_heartbeat = time.monotonic() + self._heartbeat_interval
        except BrokerUnavailable as exc:
            log.warning("heartbeat not sent: %s", exc)

    def stop_all(self, reason: str) -> None:
        with self._lock:
            live = list(self._live.values())
        for attempt in live:
            attempt.control.request_stop(Outcome.CANCELLED, reason)


# An attempt's record, its statements built once (every job's launch and end runs them). An
# UPDATE's parameters must not be named as its columns are.
_ATTEMPT_FINISHED = sa.select(schema.attempts.c.finished_at).where(
    schema.attempts.c.job_id == sa.bindparam("job"),
    schema.attempts.c.attempt == sa.bindparam("number"),
)
_LAUNCHED = schema.attempts.insert()
_FINISHED = (
    schema.attempts.update()
    .where(
        schema.attempts.c.job_id == sa.bindparam("job"),
        schema.attempts.c.attempt == sa.bindparam("number"),
    )
    .values(finished_at=sa.bindparam("at"))
)
