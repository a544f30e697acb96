"""Scenario 4, scale: reads with many finished jobs in the store, and a projection's rebuild.

The log is seeded before the API starts, straight through `shared.bus.Publisher` with the events
a finished job's life writes (submitted, assigned, started, finished), so the API's projection
builds its read model from scratch when it starts: events over the time from the API's start to
`/readyz` (its tables at the log's tail) is the rebuild rate — a lower bound, as that time
includes the process's own start. Then `GET /jobs` pages and `GET /jobs/{id}` latencies.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from bench.cluster import Cluster, summarise
from shared.bus import Publisher, Topology
from shared.events import Event, EventFactory, EventType
from shared.jobs import Outcome

BATCH = 500  # events a confirm: seeding is not what is measured


def run(root: Path, jobs: int, reads: int) -> dict[str, Any]:
    cluster = Cluster(root, ("api",), ready_timeout=900, ready_max_lag=0)
    events = _seed(cluster, jobs)
    started = time.monotonic()
    with cluster:
        rebuilt = time.monotonic() - started
        ids = random.sample(_job_ids(cluster), k=min(reads, jobs))
        session = requests.Session()
        one = [_timed(session, f"{cluster.url}/jobs/{job_id}") for job_id in ids]
        pages = _pages(session, cluster.url, reads)
    return {
        "jobs": jobs,
        "events": events,
        "rebuild_s": round(rebuilt, 2),
        "rebuild_events_s": round(events / rebuilt, 0),
        "get_job": summarise(one),
        "get_jobs_page": summarise(pages),
    }


def _seed(cluster: Cluster, jobs: int) -> int:
    ns = cluster.namespace
    topology = Topology(ns, f"{ns}.events", f"{ns}.job_response", f"{ns}.job_response")
    publisher = Publisher(cluster.amqp_url, topology, "bench-seed", timeout=60)
    api, scheduler, runner = EventFactory("api"), EventFactory("scheduler"), EventFactory("r1")
    pending: list[Event] = []
    count = 0
    for _ in range(jobs):
        job = str(uuid.uuid4())
        pending += [
            api(
                EventType.JOB_SUBMITTED,
                job,
                command="true",
                image="freight/busybox:local",
                gpus=None,
                env={},
                timeout=None,
                owner="bench",
            ),
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
        if len(pending) >= BATCH:
            publisher.append(*pending)
            count, pending = count + len(pending), []
    if pending:
        publisher.append(*pending)
        count += len(pending)
    publisher.close()
    return count


def _job_ids(cluster: Cluster) -> list[str]:
    page = requests.get(
        f"{cluster.url}/jobs", params={"limit": "1000", "status": "all"}, timeout=30
    ).json()
    return [job["job_id"] for job in page["results"]]


def _pages(session: requests.Session, url: str, count: int) -> list[float]:
    """`GET /jobs?status=all` pages of 100, following `next`, from the first again at the end."""
    seconds, path = [], "/jobs?limit=100&status=all"
    for _ in range(count):
        started = time.monotonic()
        page = session.get(f"{url}{path}", timeout=30).json()
        seconds.append(time.monotonic() - started)
        path = page.get("next") or "/jobs?limit=100&status=all"
    return seconds


def _timed(session: requests.Session, url: str) -> float:
    started = time.monotonic()
    session.get(url, timeout=30).raise_for_status()
    return time.monotonic() - started
