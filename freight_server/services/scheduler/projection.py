"""The scheduler: folds jobs and heartbeats, places queued jobs, declares silent runners lost."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.services.scheduler import schema
from freight_server.services.scheduler.backlog import Backlog
from freight_server.services.scheduler.fairshare import FairQueue, Quota, Totals, usage_by_owner
from freight_server.services.scheduler.liveness import Liveness
from freight_server.services.scheduler.placement import (
    Placement,
    Plan,
    RunnerCapacity,
    place,
    reasons_for,
)
from freight_server.shared.bus import BrokerUnavailable
from freight_server.shared.consumer import Logged
from freight_server.shared.db import kept_until_committed
from freight_server.shared.events import Event, EventFactory, EventType
from freight_server.shared.jobs import ACTIVE, JobView, Outcome, Status
from freight_server.shared.views import ViewCache, fold_views, view_columns, write_views

log = logging.getLogger(__name__)

_CHANGES = "scheduler.changes"  # session.info key: the job views a transaction wrote

# Queued jobs a pass looks at for placement, at most: it stops sooner once every runner is full.
MAX_QUEUE_SCAN = 5000
# Queued jobs past that point whose reason a pass checks, at most: they wait for a slot, and a
# sweep resumes where the last one stopped, so each pass costs little however long the queue.
MAX_REASON_SCAN = 1000
# Wait reasons told per pass, head of the queue first: when capacity churns, the log gets a
# bounded trickle of JobWaiting, never a flood; the rest are told in the passes that follow.
MAX_REASONS_PER_PASS = 100
# Most jobs are placed at once: a reason is told only once a job has waited a moment, so a
# job submitted while a runner is still starting keeps a short history.
REASON_DELAY = timedelta(seconds=1)
# Seconds between prunings of ended jobs.
PRUNE_INTERVAL = 600.0


class HeartbeatSource(Protocol):
    def take(self) -> list[Event]:
        """The runners' latest heartbeats heard live since the last call."""

    def listening_since(self) -> float | None:
        """Since when (the scheduler's monotonic clock) heartbeats can be heard; None: not now."""


class SchedulerProjection:
    consumer = "scheduler"
    start_at = "first"
    offsets = schema.offsets
    dead_letters = schema.dead_letters

    def __init__(
        self,
        engine: sa.Engine,
        log_writer: Any,
        new_event: EventFactory,
        runner_deadline: float,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        heartbeats: HeartbeatSource | None = None,
        retention: timedelta | None = None,
    ):
        self._engine = engine
        self._log = log_writer
        self._new_event = new_event
        self._deadline = timedelta(seconds=runner_deadline)
        self._clock = clock
        self._monotonic = monotonic
        self._liveness = Liveness(runner_deadline, monotonic)
        self._heartbeats = heartbeats
        # Ended jobs are kept this long (FREIGHT_FILE_RETENTION), then pruned; None: kept.
        self._retention = retention
        self._next_prune = 0.0
        self._views = ViewCache()  # the jobs' views as this projection last committed them
        # Decisions published but not yet read back from the log, counted against capacity.
        self._in_flight: dict[str, Placement] = {}
        # Wait reasons published but perhaps not yet read back: each is told once, on change.
        self._told: dict[str, str] = {}
        self._declared_lost: set[str] = set()
        # Jobs told "runner lost" because they were assigned to a runner already lost: job id
        # -> the attempt told, until the job is read back no longer active.
        self._orphans_told: dict[str, int] = {}
        # The queue and the active jobs' holds as committed; None until placement first needs
        # it, and again whenever a transaction of this projection's rolled back.
        self._backlog: Backlog | None = None
        self._quotas: dict[str, Quota] | None = None  # the same: the table's, read when needed
        # The runners not lost and what each reported it has, as the table holds them: read
        # again after any write to it (a heartbeat, a RunnerLost) rather than on every pass.
        self._runners: list[tuple[str, dict[str, Any]]] | None = None
        # Queued jobs before `_swept_to` have had their reason checked while every runner was
        # full as in `_swept_runners`: the next sweep of the unexamined tail resumes there.
        self._swept_to = 0
        self._swept_runners: list[RunnerCapacity] | None = None
        # Placement waits until the scheduler reads back its own SchedulerStarted: everything
        # before it has been replayed, so no decision is taken on a stale view of the queue.
        self._marker: str | None = None
        self.caught_up = False

    def announce_start(self) -> None:
        started = self._new_event(EventType.SCHEDULER_STARTED, None)
        self._log.append(started)
        self._marker = started.event_id

    # -- projection ------------------------------------------------------------------------

    def apply_batch(self, session: Session, batch: Sequence[Logged]) -> None:
        """Runners and quotas event by event; the batch's job events folded into their views
        at once (freight_server/shared/views.py), each change remembered with its transaction
        (`_changes`). Job views depend on no runner or quota row, so the order between the two
        is kept where it matters."""
        for event, _ in batch:
            if event.event_id == self._marker:
                self.caught_up = True
            if event.job_id is None:
                self._apply_other(session, event)
        self._fold_jobs(session, batch)

    def apply(self, session: Session, event: Event, position: int) -> None:
        self.apply_batch(session, [Logged(event, position)])

    def _apply_other(self, session: Session, event: Event) -> None:
        if event.type == EventType.RUNNER_HEARTBEAT:
            # Heartbeats have their own stream now; these are from runners of before it, and
            # count as heard only once the replay is over.
            self._record_heartbeat(session, event, live=self.caught_up)
        elif event.type == EventType.RUNNER_LOST:
            self._runners = None
            session.execute(
                schema.runners.update()
                .where(schema.runners.c.runner_id == event.data["runner"])
                .values(lost=True)
            )
        elif event.type == EventType.OWNER_QUOTA_SET:
            self._record_quota(session, event)

    def _record_quota(self, session: Session, event: Event) -> None:
        owner = str(event.data["owner"])
        quota = Quota.from_data(event.data)
        quotas = schema.quotas
        values = {"max_gpus": quota.max_gpus, "max_running": quota.max_running}
        session.execute(quotas.delete().where(quotas.c.owner == owner))
        session.execute(quotas.insert().values(owner=owner, **values))
        self._quotas = None  # read again once committed

    def _fold_jobs(self, session: Session, batch: Sequence[Logged]) -> None:
        changes = fold_views(session, schema.jobs, batch, cache=self._views)
        if not changes:
            return
        write_views(
            session, schema.jobs, changes, view_columns, created=lambda c: {"position": c.position}
        )
        # A job's place in the queue is where it was submitted, kept in its row: Backlog.record
        # needs it for a job already known and still (or again) queued.
        positions = self._queue_positions(
            session,
            [
                c.after.job_id
                for c in changes
                if c.before is not None and c.after.status == Status.QUEUED
            ],
        )
        # Last, so that a batch that failed to fold leaves nothing behind to remember.
        self._changes(session).extend(
            (c.after, c.position if c.before is None else positions.get(c.after.job_id, c.position))
            for c in changes
        )

    def _queue_positions(self, session: Session, job_ids: list[str]) -> dict[str, int]:
        """Where these jobs' rows place them: the backlog knows a job it holds queued (one
        told why it waits, say); the table tells the rest (a retry, back in the queue)."""
        backlog = self._backlog
        positions = {
            job_id: backlog.position_of(job_id)
            for job_id in job_ids
            if backlog is not None and job_id in backlog
        }
        rest = [job_id for job_id in job_ids if job_id not in positions]
        if rest:
            positions.update(
                (row.job_id, row.position) for row in session.execute(_POSITIONS, {"ids": rest})
            )
        return positions

    # -- what the committed tables hold, in memory --------------------------------------------

    def _changes(self, session: Session) -> list[tuple[JobView, int]]:
        """The job views this session's transaction wrote: the in-memory state learns them
        only once the transaction commits, and forgets itself if one rolls back."""
        return kept_until_committed(session, _CHANGES, self._committed, self._rolled_back)

    def _committed(self, changes: list[tuple[JobView, int]]) -> None:
        for job, position in changes:
            if job.status != Status.QUEUED:
                self._in_flight.pop(job.job_id, None)
                self._told.pop(job.job_id, None)
            if job.status not in ACTIVE:
                self._orphans_told.pop(job.job_id, None)
            if self._backlog is not None:
                self._backlog.record(job, position)
                if job.status == Status.QUEUED and position < self._swept_to:
                    self._swept_to = position  # back in the queue (a retry): check it again

    def _rolled_back(self) -> None:
        # Even a savepoint's (an event set aside): which of the changes it undid is not known,
        # so the tables are read again before the next placement.
        self._backlog = None
        self._quotas = None
        self._runners = None

    def _current_backlog(self) -> Backlog:
        if self._backlog is None:
            with self._engine.connect() as connection:
                backlog = self._backlog = Backlog.load(connection)
            self._swept_to, self._swept_runners = 0, None
            # A decision or a reason whose job has left the queue was read back (the change
            # that said so may have been forgotten with a savepoint's rollback).
            self._in_flight = {k: p for k, p in self._in_flight.items() if k in backlog}
            self._told = {k: r for k, r in self._told.items() if k in backlog}
        return self._backlog

    def _current_quotas(self) -> dict[str, Quota]:
        if self._quotas is None:
            with self._engine.connect() as connection:
                self._quotas = {
                    row.owner: Quota(row.max_gpus, row.max_running)
                    for row in connection.execute(sa.select(schema.quotas))
                }
        return self._quotas

    def hear_heartbeats(self) -> None:
        """What the runners said since the last pass, heard now."""
        heard = self._heartbeats.take() if self._heartbeats is not None else []
        if heard:
            with Session(self._engine) as session, session.begin():
                for heartbeat in heard:
                    self._record_heartbeat(session, heartbeat, live=True)

    def _record_heartbeat(self, session: Session, event: Event, live: bool) -> None:
        runner_id = event.data["runner"]
        capacity = {k: event.data.get(k) for k in ("slots", "gpus", "cpus", "memory_mb")}
        runners = schema.runners
        exists = session.execute(
            sa.select(runners.c.runner_id).where(runners.c.runner_id == runner_id)
        ).first()
        # `last_seen` is the runner's own clock, kept for people; liveness is judged by when
        # this scheduler heard it (Liveness), and only heartbeats heard live count.
        if live:
            self._liveness.heard(runner_id)
        values = {"last_seen": event.occurred_at, "capacity": capacity, "lost": False}
        self._runners = None
        if exists:
            session.execute(
                runners.update().where(runners.c.runner_id == runner_id).values(**values)
            )
        else:
            session.execute(runners.insert().values(runner_id=runner_id, **values))
        self._declared_lost.discard(runner_id)

    # -- decisions -------------------------------------------------------------------------

    def after_batch(self, caught_up: bool) -> None:
        self._liveness.behind(not caught_up)
        self.place_queued_jobs()

    def tick(self) -> None:
        if self._marker is None:
            try:
                self.announce_start()
            except BrokerUnavailable as exc:
                log.warning("could not announce the scheduler's start: %s", exc)
                return
        self._liveness.look()
        self.hear_heartbeats()
        if self._heartbeats is not None:
            self._liveness.listening(self._heartbeats.listening_since())
        self.declare_silent_runners_lost()
        self.end_jobs_placed_on_lost_runners()
        self.place_queued_jobs()
        self.prune_ended_jobs()

    def place_queued_jobs(self) -> None:
        """Place what fits, head of the queue first; tell a bounded few why they wait.
        Costs the jobs it places and looks at, and never more than a bounded sweep besides."""
        if not self.caught_up:
            return
        backlog = self._current_backlog()
        if not len(backlog):
            return
        capacity = self._free_capacity(backlog)
        fair = FairQueue(
            backlog.lanes(),
            usage_by_owner((*backlog.holds(), *self._in_flight.values())),
            Totals.of(capacity),
            self._current_quotas(),
        )
        candidates = (job for job in fair if job.job_id not in self._in_flight)
        plan = place(islice(candidates, MAX_QUEUE_SCAN), capacity, until_full=True, fairness=fair)
        placements = plan.placements
        # Right after a (re)start, no runner heard from yet means nothing: they get a deadline.
        settled = capacity or self._liveness.settled()
        reasons, swept_to = self._changed_reasons(backlog, plan, fair) if settled else ({}, None)
        if placements or reasons:
            events = [
                self._new_event(
                    EventType.JOB_ASSIGNED,
                    p.job_id,
                    runner=p.runner_id,
                    attempt=p.attempt,
                    gpus=[dict(g) for g in p.gpus],
                )
                for p in placements
            ]
            events += [
                self._new_event(EventType.JOB_WAITING, job_id, reason=reason)
                for job_id, reason in reasons.items()
            ]
            try:
                self._log.append(*events)
            except BrokerUnavailable as exc:
                log.warning("could not publish %d placements and reasons: %s", len(events), exc)
                return
            self._told.update(reasons)
            for p in placements:
                self._in_flight[p.job_id] = p
                log.info("placed job %s on %s (attempt %d)", p.job_id, p.runner_id, p.attempt)
        if swept_to is not None:
            self._swept_to = swept_to

    def _changed_reasons(
        self, backlog: Backlog, plan: Plan, fair: FairQueue
    ) -> tuple[dict[str, str], int | None]:
        """Reasons that changed since told, head of the queue first, at most
        MAX_REASONS_PER_PASS; and where the sweep of the unexamined tail stopped, if it ran."""
        changed: dict[str, str] = {}
        now = self._clock()
        if not plan.full:
            # Reasons told now are not the ones a full cluster gives: sweep again once full.
            self._swept_runners = None
        examined = ((backlog.view_of(job_id), reason) for job_id, reason in plan.waiting.items())
        for job, reason in examined:
            if self._tells(job, reason, now):
                changed[job.job_id] = reason
                if len(changed) >= MAX_REASONS_PER_PASS:
                    return changed, None
        if not plan.full:
            return changed, None
        # The rest wait for a slot, or for a runner that has what they need: their reasons
        # change only when the runners' inventory does, so the sweep resumes where it stopped.
        inventory = sorted((r.emptied() for r in plan.runners), key=lambda r: r.runner_id)
        if inventory != self._swept_runners:
            self._swept_runners, self._swept_to = inventory, 0
        for_capacity = reasons_for(plan.runners)

        def reason_of(job: JobView) -> str:
            return fair.blocked(job) or for_capacity(job)

        # The pass looked at the queue in fair order, not by position: the sweep covers all of
        # it, resuming where it stopped; a reason the pass told is not told again.
        looked_at = {p.job_id for p in plan.placements} | plan.waiting.keys()
        swept_to = self._swept_to
        for position, job in islice(self._tail(backlog, -1), MAX_REASON_SCAN):
            if now - job.created_at < REASON_DELAY:
                return changed, position  # the rest are younger still: a later pass
            swept_to = position + 1
            if job.job_id in self._in_flight or job.job_id in looked_at:
                continue
            reason = reason_of(job)
            if self._tells(job, reason, now):
                changed[job.job_id] = reason
                if len(changed) >= MAX_REASONS_PER_PASS:
                    break
        return changed, swept_to

    def _tail(self, backlog: Backlog, after: int) -> Iterator[tuple[int, JobView]]:
        """Queued jobs past `after` and not yet swept, oldest first."""
        return backlog.queued(after=max(after, self._swept_to - 1))

    def _tells(self, job: JobView, reason: str, now: datetime) -> bool:
        """Whether `reason` is news for `job`, and it has waited long enough to be told."""
        if reason == self._told.get(job.job_id, job.reason):
            return False
        return now - job.created_at >= REASON_DELAY

    def _free_capacity(self, backlog: Backlog) -> list[RunnerCapacity]:
        """Each live runner's reported capacity, less what its active and in-flight jobs hold."""
        if self._runners is None:
            runners = schema.runners
            with self._engine.connect() as connection:
                self._runners = [
                    (row.runner_id, row.capacity)
                    for row in connection.execute(
                        sa.select(runners.c.runner_id, runners.c.capacity).where(
                            runners.c.lost.is_(False)
                        )
                    )
                ]
        by_runner: dict[str, list[Placement]] = {}
        for hold in (*backlog.holds(), *self._in_flight.values()):
            by_runner.setdefault(hold.runner_id, []).append(hold)
        return [
            _capacity_of(runner_id, capacity, by_runner.get(runner_id, []))
            for runner_id, capacity in self._runners
            if self._liveness.can_take_work(runner_id)
        ]

    def declare_silent_runners_lost(self) -> None:
        if not self.caught_up:
            return
        with self._engine.connect() as connection:
            not_lost = connection.execute(
                sa.select(schema.runners.c.runner_id).where(schema.runners.c.lost.is_(False))
            ).scalars()
            for runner_id in self._liveness.silent(not_lost):
                if runner_id in self._declared_lost:
                    continue
                jobs = [
                    JobView.from_dict(view)
                    for view in connection.execute(
                        sa.select(schema.jobs.c.view).where(
                            schema.jobs.c.runner == runner_id,
                            schema.jobs.c.status.in_([s.value for s in ACTIVE]),
                        )
                    ).scalars()
                ]
                self._declare_lost(runner_id, jobs)

    def end_jobs_placed_on_lost_runners(self) -> None:
        """A placement published just before its runner was declared lost lands after the
        RunnerLost: the job is then active on a runner no one will hear from. It ends "runner
        lost" like the others (and is retried while it has attempts left)."""
        if not self.caught_up:
            return
        jobs, runners = schema.jobs, schema.runners
        lost_runners = sa.select(runners.c.runner_id).where(runners.c.lost.is_(True))
        with self._engine.connect() as connection:
            orphans = [
                job
                for job in map(
                    JobView.from_dict,
                    connection.execute(
                        sa.select(jobs.c.view).where(
                            jobs.c.runner.in_(lost_runners),
                            jobs.c.status.in_([s.value for s in ACTIVE]),
                        )
                    ).scalars(),
                )
                if self._orphans_told.get(job.job_id) != job.attempt
            ]
        if not orphans:
            return
        try:
            self._log.append(*(_runner_lost(self._new_event, job) for job in orphans))
        except BrokerUnavailable as exc:
            log.warning("could not end %d jobs of lost runners: %s", len(orphans), exc)
            return
        for job in orphans:
            self._orphans_told[job.job_id] = job.attempt
            log.warning("job %s was placed on %s, a lost runner; ended", job.job_id, job.runner)

    def prune_ended_jobs(self) -> None:
        """Jobs ended longer than the retention ago leave the table (a late event of one
        changes nothing: the fold of an unknown job is nothing). At most every PRUNE_INTERVAL."""
        if self._retention is None or self._monotonic() < self._next_prune:
            return
        self._next_prune = self._monotonic() + PRUNE_INTERVAL
        jobs = schema.jobs
        with self._engine.begin() as connection:
            pruned = connection.execute(
                jobs.delete().where(jobs.c.finished_at < self._clock() - self._retention)
            )
        if cast(sa.CursorResult[Any], pruned).rowcount:
            log.info("pruned %d jobs ended before the retention", pruned.rowcount)

    def _declare_lost(self, runner_id: str, jobs: list[JobView]) -> None:
        events = [_runner_lost(self._new_event, job) for job in jobs]
        events.append(
            self._new_event(
                EventType.RUNNER_LOST, None, runner=runner_id, jobs=[j.job_id for j in jobs]
            )
        )
        try:
            self._log.append(*events)
        except BrokerUnavailable as exc:
            log.warning("could not declare runner %s lost: %s", runner_id, exc)
            return
        self._declared_lost.add(runner_id)
        log.warning(
            "runner %s is lost (silent for %s); %d jobs affected",
            runner_id,
            self._deadline,
            len(jobs),
        )


def _runner_lost(new_event: EventFactory, job: JobView) -> Event:
    return new_event(
        EventType.JOB_FINISHED,
        job.job_id,
        attempt=job.attempt,
        runner=job.runner,
        exit_code=None,
        outcome=Outcome.LOST.value,
        reason="runner lost",
    )


def _capacity_of(
    runner_id: str, reported: dict[str, Any], holds: list[Placement]
) -> RunnerCapacity:
    cpus, memory_mb = reported.get("cpus"), reported.get("memory_mb")
    return RunnerCapacity(
        runner_id=runner_id,
        slots=int(reported.get("slots") or 0),
        gpus=tuple(reported.get("gpus") or ()),
        cpus=None if cpus is None else float(cpus),
        memory_mb=None if memory_mb is None else int(memory_mb),
        used_slots=len(holds),
        held_gpus=frozenset(str(g["uuid"]) for h in holds for g in h.gpus),
        used_cpus=sum(h.cpus for h in holds),
        used_memory_mb=sum(h.memory_mb for h in holds),
    )


# Built once: a batch that puts known jobs back in the queue reads where their rows are.
_POSITIONS = sa.select(schema.jobs.c.job_id, schema.jobs.c.position).where(
    schema.jobs.c.job_id.in_(sa.bindparam("ids", expanding=True))
)
