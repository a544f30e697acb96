"""The runner's periodic chores: forgetting jobs that ended long ago and pruning the images
it pulled. They run on a thread of their own: the tick that asks for them runs on the
consumer's thread, whose broker heartbeats they must never hold up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from freight_server.services.runner import schema
from freight_server.shared.jobs import ACTIVE

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL = 300.0  # seconds between rounds of chores


class EndedJobs:
    """Deletes, FREIGHT_FILE_RETENTION after a job ended, its row in this runner's projection
    (whoever ran it) and this runner's finished attempts of it. Late events for a forgotten job
    change nothing (the fold ignores whatever follows an end), so nothing is lost."""

    def __init__(
        self,
        engine: sa.Engine,
        runner_id: str,
        retention: float,
        clock: Callable[[], datetime],
    ):
        self._engine = engine
        self._runner_id = runner_id
        self._retention = timedelta(seconds=retention)
        self._clock = clock

    def prune(self) -> tuple[int, int]:
        """Returns how many job rows and attempt rows it deleted."""
        cutoff = self._clock() - self._retention
        jobs, attempts = schema.jobs, schema.attempts
        # An attempt's row is what keeps its start at most once: it stays while the job's view
        # still shows it active (its end not read back yet), whatever its age.
        still_active = (
            sa.select(jobs.c.job_id)
            .where(
                jobs.c.projector == self._runner_id,
                jobs.c.job_id == attempts.c.job_id,
                jobs.c.status.in_([s.value for s in ACTIVE]),
            )
            .exists()
        )
        with self._engine.begin() as connection:
            deleted_jobs = connection.execute(
                jobs.delete().where(
                    jobs.c.projector == self._runner_id, jobs.c.finished_at < cutoff
                )
            ).rowcount
            deleted_attempts = connection.execute(
                attempts.delete().where(
                    attempts.c.runner_id == self._runner_id,
                    attempts.c.finished_at < cutoff,
                    ~still_active,
                )
            ).rowcount
        if deleted_jobs or deleted_attempts:
            log.info("forgot %d ended jobs, %d attempts", deleted_jobs, deleted_attempts)
        return deleted_jobs, deleted_attempts


class Housekeeping:
    """Runs its chores in turn on a thread of its own, at most every `interval` seconds and
    never two rounds at once. A chore that fails is logged and tried again next round."""

    def __init__(
        self, chores: Sequence[Callable[[], object]], interval: float = HOUSEKEEPING_INTERVAL
    ):
        self._chores = chores
        self._interval = interval
        self._next_round = 0.0
        self._thread: threading.Thread | None = None

    def run_if_due(self) -> None:
        if time.monotonic() < self._next_round or self.running:
            return
        self._next_round = time.monotonic() + self._interval
        self._thread = threading.Thread(target=self._round, name="runner-housekeeping", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _round(self) -> None:
        for chore in self._chores:
            try:
                chore()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception(
                    "runner housekeeping: %s failed", getattr(chore, "__qualname__", chore)
                )
