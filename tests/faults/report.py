"""What the fault suite saw, and the guarantees it checks, printed as one table."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from freight_server.shared.events import Event, MalformedEvent, decode
from tests.faults.stream import Poison

SUCCEEDS, FAILS, CANCELLED = "succeeds", "fails", "cancelled"

# Every submission's command starts with `: <marker>;`: jobs with one marker are one submission.
MARKER = re.compile(r"^: (fault-\d+-(?:key|bare));")

# A scheduler measures silence from when it applied a heartbeat, never before it was written:
# a runner truly silent for the deadline shows that much silence in the log. The margin is for
# the log's timestamps being rounded to nothing else.
SILENCE_MARGIN = 0.5


@dataclass
class Submitted:
    job_id: str
    kind: str
    marker: str
    keyed: bool
    tries: int = 1
    replayed: bool = False  # answered with `Idempotent-Replayed: true`
    cancel_answer: int | None = None  # the DELETE's status, for cancelled jobs


class RunnerLoss(NamedTuple):
    runner: str
    silence: float | None  # seconds since its latest heartbeat in the log; None: never heard


class Check(NamedTuple):
    name: str
    ok: bool | None  # None: informational, never fails the run
    detail: str


@dataclass
class Report:
    seed: int
    runner_deadline: float
    accepted: list[Submitted] = field(default_factory=list)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    starts: Counter[tuple[str, str]] = field(default_factory=Counter)
    responses: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)
    dead_services: list[str] = field(default_factory=list)
    # Read from the log at the end.
    runner_losses: list[RunnerLoss] = field(default_factory=list)
    skewed_runner: str | None = None  # the runner whose clock is off, if libfaketime is here
    skewed_placements: int = 0
    ended_runner_lost: Counter[str] = field(default_factory=Counter)  # runner: its jobs
    poison: list[Poison] = field(default_factory=list)
    poison_last_offset: int | None = None
    positions: dict[str, int | None] = field(default_factory=dict)  # live projection: offset
    dead_lettered: dict[str, int] = field(default_factory=dict)  # projection: poison it kept

    def checks(self) -> list[Check]:
        lost = [s.job_id for s in self.accepted if s.job_id not in self.final]
        stuck = [j for j, v in self.final.items() if v["status"] not in ("COMPLETE", "FAILED")]
        wrong = [s.job_id for s in self.accepted if s.job_id in self.final and not self._fine(s)]
        repeated = {k: n for k, n in self.starts.items() if n > 1}
        unannounced = [j for j in self.final if j not in self.responses]
        false_losses = [
            loss
            for loss in self.runner_losses
            if loss.silence is not None and loss.silence < self.runner_deadline - SILENCE_MARGIN
        ]
        return [
            Check(
                "accepted jobs lost",
                not lost,
                f"{len(lost)} of {len(self.accepted)} accepted; {len(self.final)} jobs in the log",
            ),
            Check("jobs stuck (not COMPLETE or FAILED)", not stuck, f"{len(stuck)} {stuck[:3]}"),
            Check(
                "COMPLETE exactly for the commands that succeed",
                not wrong,
                f"{len(wrong)} wrong: {[self._describe(job_id) for job_id in wrong[:3]]}",
            ),
            Check(
                "attempts run twice (container started again)",
                not repeated,
                f"{len(repeated)}; {sum(self.starts.values())} starts, repeated: {repeated}",
            ),
            Check(
                "a job_response for every job",
                not unannounced,
                f"{len(self.responses)} announced, missing {unannounced[:3]}",
            ),
            Check(
                "every service alive at the end",
                not self.dead_services,
                f"dead: {self.dead_services}",
            ),
            Check(
                "runners declared lost while heard from",
                not false_losses,
                f"{len(false_losses)}; RunnerLost: "
                + (", ".join(self._describe_loss(loss) for loss in self.runner_losses) or "none")
                + "; attempts ended 'runner lost': "
                + (
                    ", ".join(f"{_short(r)} {n}" for r, n in self.ended_runner_lost.items())
                    or "none"
                ),
            ),
            self._skew_check(),
            self._poison_check(),
            *self._duplicate_checks(),
        ]

    def table(self) -> str:
        lines = [f"fault suite, seed {self.seed}", "faults: " + "; ".join(self.faults), ""]
        for name, ok, detail in self.checks():
            verdict = "INFO" if ok is None else "PASS" if ok else "FAIL"
            lines.append(f"{verdict}  {name:<50} {detail}")
        return "\n".join(lines)

    def failed(self) -> list[str]:
        return [check.name for check in self.checks() if check.ok is False]

    # -- the log, read at the end ----------------------------------------------------------

    def read_log(
        self,
        events: list[tuple[int, bytes]],
        heartbeats: list[tuple[int, bytes]],
        skews: dict[str, float],
    ) -> None:
        """RunnerLost with each runner's silence, placements on the skewed runner, and where
        the poison landed. `skews`: seconds each runner's clock is ahead of the true one."""
        poison = {p.body for p in self.poison}
        poisoned = [offset for offset, body in events if body in poison]
        self.poison_last_offset = max(poisoned, default=None)
        decoded = [e for _, body in (*events, *heartbeats) if (e := _decoded(body))]
        heard: dict[str, list[datetime]] = {}
        for event in decoded:
            if event.type == "RunnerHeartbeat":
                runner = str(event.data.get("runner"))
                true_time = event.occurred_at - timedelta(seconds=skews.get(runner, 0.0))
                heard.setdefault(runner, []).append(true_time)
        for event in decoded:
            if event.type == "RunnerLost":
                runner = str(event.data.get("runner"))
                before = [t for t in heard.get(runner, []) if t <= event.occurred_at]
                silence = (event.occurred_at - max(before)).total_seconds() if before else None
                self.runner_losses.append(RunnerLoss(runner, silence))
            elif event.type == "JobAssigned" and event.data.get("runner") == self.skewed_runner:
                self.skewed_placements += 1
            elif event.type == "JobFinished" and event.data.get("reason") == "runner lost":
                self.ended_runner_lost[str(event.data.get("runner"))] += 1

    # -- the rows --------------------------------------------------------------------------

    def _skew_check(self) -> Check:
        name = "runner with its clock 60s ahead given jobs"
        if self.skewed_runner is None:
            return Check(name, None, "not run: no libfaketime here")
        return Check(
            name,
            self.skewed_placements > 0,
            f"{self.skewed_placements} placements on {_short(self.skewed_runner)}",
        )

    def _poison_check(self) -> Check:
        name = "poison events passed by every live projection"
        if not self.poison:
            return Check(name, None, "none appended")
        if self.poison_last_offset is None:
            return Check(name, False, f"{len(self.poison)} appended, not found in the log")
        behind = [
            service
            for service, position in self.positions.items()
            if position is None or position < self.poison_last_offset
        ]
        kept = ", ".join(f"{s} {n}" for s, n in self.dead_lettered.items())
        return Check(
            name,
            not behind,
            f"{len(self.poison)} appended (last at {self.poison_last_offset}); "
            f"stopped before them: {behind or 'none'}; dead-lettered: {kept}",
        )

    def _duplicate_checks(self) -> list[Check]:
        jobs_per_marker: Counter[str] = Counter()
        for job in self.final.values():
            if match := MARKER.match(job.get("command") or ""):
                jobs_per_marker[match.group(1)] += 1
        rows = []
        for keyed, name in (
            (True, "duplicate jobs, submitted with an Idempotency-Key"),
            (False, "duplicate jobs, submitted without a key (info)"),
        ):
            mine = [s for s in self.accepted if s.keyed == keyed]
            duplicates = sum(max(0, jobs_per_marker[s.marker] - 1) for s in mine)
            retried = sum(1 for s in mine if s.tries > 1)
            detail = f"{duplicates}; {len(mine)} submitted, {retried} retried"
            if keyed:
                replays = sum(1 for s in mine if s.replayed)
                detail += f", {replays} answered as replays"
            rows.append(Check(name, duplicates == 0 if keyed else None, detail))
        return rows

    def _fine(self, submitted: Submitted) -> bool:
        job = self.final[submitted.job_id]
        if submitted.kind == SUCCEEDS:
            return job["status"] == "COMPLETE"
        if submitted.kind == FAILS:
            return job["status"] == "FAILED" and job["exit_code"] == 3
        if submitted.cancel_answer == 202:
            return job["status"] == "FAILED" and job["reason"] == "cancelled"
        return job["status"] == "COMPLETE"  # it ended before the cancel (409)

    def _describe(self, job_id: str) -> str:
        submitted = next(s for s in self.accepted if s.job_id == job_id)
        job = self.final.get(job_id, {})
        return (
            f"{job_id} {submitted.kind} (cancel {submitted.cancel_answer}) -> "
            f"{job.get('status')} {job.get('reason')!r} attempt {job.get('attempt')}"
        )

    @staticmethod
    def _describe_loss(loss: RunnerLoss) -> str:
        silent = "never heard" if loss.silence is None else f"{loss.silence:.1f}s silent"
        return f"{_short(loss.runner)} ({silent})"


def _decoded(body: bytes) -> Event | None:
    try:
        event = decode(body)
    except MalformedEvent:
        return None
    return event if event.occurred_at.tzinfo is not None else None


def _short(runner_id: str) -> str:
    """`test-ab12-runner-b` -> `runner-b`: the namespace says nothing in a table."""
    return runner_id[runner_id.find("runner-") :] if "runner-" in runner_id else runner_id
