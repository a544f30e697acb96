"""A projection's fold alone, in this process: no broker, no services, so the figure moves with
the code and little with the machine.

    python -m bench.fold [--jobs 2000] [--batch 4] [--rounds 3]

A runner's job views (its own SQLite database, migrated as the runner migrates it) take the
events of `jobs` trivial jobs of another runner, interleaved as a busy log interleaves them (a
job submitted while earlier ones are assigned, started and finished), in batches of `batch`
events, each batch one transaction as the consumer applies it (`shared/views.py`: fold, write,
commit). Reported: CPU µs an event, best of `rounds`; the baseline is the same events folded in
memory only (`shared.jobs.evolve`), the work no projection can skip.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from freight_server.services.runner import schema
from freight_server.shared.consumer import CONSUMING
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventType, Logged
from freight_server.shared.jobs import JobView, evolve
from freight_server.shared.views import ViewCache, fold_views, view_columns, write_views

SCOPE = {"projector": "bench-runner"}
LAG = 8  # events of a job this many jobs apart are interleaved


def log_of(jobs: int) -> list[Event]:
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    events: list[Event] = []

    def add(type: EventType, job: int, **data: object) -> None:
        nonlocal at
        at += timedelta(milliseconds=1)
        events.append(
            Event(type=type.value, data=data, job_id=ids[job], producer="bench", occurred_at=at)
        )

    for k in range(jobs + 3 * LAG):
        if k < jobs:
            add(EventType.JOB_SUBMITTED, k, command="true", image="busybox", owner="bench")
        if 0 <= (j := k - LAG) < jobs:
            add(EventType.JOB_ASSIGNED, j, runner="another", attempt=1, gpus=[])
        if 0 <= (j := k - 2 * LAG) < jobs:
            add(EventType.JOB_STARTED, j, runner="another", attempt=1)
        if 0 <= (j := k - 3 * LAG) < jobs:
            add(
                EventType.JOB_FINISHED,
                j,
                runner="another",
                attempt=1,
                outcome="succeeded",
                exit_code=0,
                reason=None,
            )
    return events


def projected(events: list[Event], batch: int, root: Path) -> float:
    """CPU seconds to fold the events into a fresh database, a transaction a batch."""
    engine = create_engine(f"sqlite:///{root / f'{uuid.uuid4().hex}.db'}")
    migrate(engine, "runner")
    cache, stretch = ViewCache(), object()
    started = time.process_time()
    for at in range(0, len(events), batch):
        logged = [Logged(e, at + n) for n, e in enumerate(events[at : at + batch])]
        with Session(engine) as session, session.begin():
            session.info[CONSUMING] = stretch
            changes = fold_views(session, schema.jobs, logged, SCOPE, cache)
            write_views(session, schema.jobs, changes, view_columns, SCOPE)
    seconds = time.process_time() - started
    engine.dispose()
    return seconds


def in_memory(events: list[Event]) -> float:
    views: dict[str | None, JobView | None] = {}
    started = time.process_time()
    for event in events:
        views[event.job_id] = evolve(views.get(event.job_id), event)
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fold", description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    events = log_of(args.jobs)
    with tempfile.TemporaryDirectory(prefix="freight-bench-fold-") as scratch:
        folded = min(projected(events, args.batch, Path(scratch)) for _ in range(args.rounds))
    floor = min(in_memory(events) for _ in range(args.rounds))
    per_event = 1e6 / len(events)
    print(
        f"{len(events)} events of {args.jobs} jobs in batches of {args.batch}: "
        f"{folded * per_event:.0f} µs of CPU an event folded into the runner's views "
        f"(in memory alone: {floor * per_event:.1f} µs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
