"""Scenario 4, scale: reads with many jobs in the store, and a projection's rebuild.

The log is seeded before the API starts, straight through `shared.bus.Publisher` with the events
a finished job's life writes (submitted, assigned, started, finished); one job in a hundred is
left queued (submitted only), so the default listing (unfinished jobs) has something to page
through. Jobs belong to `OWNERS` users in turn. The API's projection then builds its read model
from scratch when it starts: events over the time from the API's start to `/readyz` (its tables
at the log's tail) is the rebuild rate — a lower bound, as that time includes the process's own
start. Then `GET /jobs/{id}` and `GET /jobs` pages: the default filter (unfinished) and
`status=all` as an admin, and `status=all` as one of the users (their own jobs only).

Seeding is not what is measured, but it is timed (`seed_s`): 100k jobs (397k events) take about
20 s here, one `Publisher.append` of `BATCH` events at a time (4 publishers at once gained only
15 %, not worth their threads).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from bench.cluster import Cluster, progress, summarise
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.events import Event, EventFactory, EventType
from freight_server.shared.jobs import Outcome
from freight_server.shared.tokens import add_token

BATCH = 500  # events a confirm
OWNERS = 10
QUEUED_EVERY = 100  # one job in this many is left queued
PAGE = 100


def run(root: Path, jobs: int, reads: int) -> dict[str, Any]:
    tokens_file = root / f"scale-tokens-{uuid.uuid4().hex[:6]}.jsonl"
    admin = add_token(tokens_file, "bench-admin", "admin")
    user = add_token(tokens_file, _owner(0), "user")
    cluster = Cluster(
        root, ("api",), ready_timeout=1800, ready_max_lag=0, api_tokens_file=str(tokens_file)
    )
    progress(f"seeding the log with {jobs} jobs")
    seeding = time.monotonic()
    events = _seed(cluster, jobs)
    seeded = time.monotonic() - seeding
    progress(f"{events} events in {seeded:.0f} s; the API rebuilds its tables from them")
    started = time.monotonic()
    with cluster:
        rebuilt = time.monotonic() - started
        progress(f"rebuilt in {rebuilt:.0f} s; reading")
        as_admin, as_user = _session(admin), _session(user)
        ids = random.sample(_job_ids(as_admin, cluster.url), k=min(reads, jobs))
        one = [_timed(as_admin, f"{cluster.url}/jobs/{job_id}") for job_id in ids]
        pages = {
            "unfinished": _pages(as_admin, cluster.url, "", reads),
            "all": _pages(as_admin, cluster.url, "all", reads),
            "owner_all": _pages(as_user, cluster.url, "all", reads),
        }
    return {
        "jobs": jobs,
        "events": events,
        "owners": OWNERS,
        "queued_jobs": len(range(0, jobs, QUEUED_EVERY)),
        "seed_s": round(seeded, 1),
        "seed_events_s": round(events / seeded, 0),
        "rebuild_s": round(rebuilt, 2),
        "rebuild_events_s": round(events / rebuilt, 0),
        "get_job": summarise(one),
        "get_jobs_page": summarise(pages["all"]),  # `status=all` as an admin, as before
        "pages": {name: summarise(seconds) for name, seconds in pages.items()},
    }


def _owner(n: int) -> str:
    return f"bench-{n}"


def _seed(cluster: Cluster, jobs: int) -> int:
    """Every job's events, in order, `BATCH` a confirm; a job's events share a batch."""
    ns = cluster.namespace
    topology = Topology(ns, f"{ns}.events", f"{ns}.job_response", f"{ns}.job_response")
    publisher = Publisher(cluster.amqp_url, topology, "bench-seed", timeout=120)
    count = 0
    try:
        for batch in _batches(jobs):
            publisher.append(*batch)
            count += len(batch)
    finally:
        publisher.close()
    return count


def _batches(jobs: int) -> Iterator[list[Event]]:
    pending: list[Event] = []
    for n in range(jobs):
        pending += _life(n)
        if len(pending) >= BATCH:
            yield pending
            pending = []
    if pending:
        yield pending


def _life(n: int) -> list[Event]:
    api, scheduler, runner = EventFactory("api"), EventFactory("scheduler"), EventFactory("r1")
    job = str(uuid.uuid4())
    submitted = api(
        EventType.JOB_SUBMITTED,
        job,
        command="true",
        image="freight/busybox:local",
        gpus=None,
        env={},
        timeout=None,
        owner=_owner(n % OWNERS),
    )
    if n % QUEUED_EVERY == 0:
        return [submitted]
    return [
        submitted,
        scheduler(EventType.JOB_ASSIGNED, job, runner="r1", attempt=1, gpus=[]),
        runner(EventType.JOB_STARTED, job, runner="r1", attempt=1),
        runner(
            EventType.JOB_FINISHED,
            job,
            runner="r1",
            attempt=1,
            outcome=Outcome.SUCCEEDED.value,
            exit_code=0,
            reason=None,
        ),
    ]


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _job_ids(session: requests.Session, url: str) -> list[str]:
    response = session.get(f"{url}/jobs", params={"limit": "1000", "status": "all"}, timeout=30)
    response.raise_for_status()
    return [job["job_id"] for job in response.json()["results"]]


def _pages(session: requests.Session, url: str, status: str, count: int) -> list[float]:
    """`GET /jobs` pages of `PAGE`, following `next`, from the first again at the end."""
    first = f"/jobs?limit={PAGE}" + (f"&status={status}" if status else "")
    seconds, path = [], first
    for _ in range(count):
        started = time.monotonic()
        response = session.get(f"{url}{path}", timeout=30)
        seconds.append(time.monotonic() - started)
        response.raise_for_status()
        path = response.json().get("next") or first
    return seconds


def _timed(session: requests.Session, url: str) -> float:
    started = time.monotonic()
    session.get(url, timeout=30).raise_for_status()
    return time.monotonic() - started
