"""Scenario 1, latency: one trivial job at a time, against the same container run by hand.

- end to end: `POST /jobs` of `true` until its `job_response` arrives (Freight), against the
  docker SDK's own create + start + wait + remove of the same image with no network (baseline);
- dispatch: the 201 until the container started (the job's `started_at`, written by the runner
  once Docker's start returned) — Freight's own cost of getting work onto the machine;
- stages: from the job's events, where the time went (submitted → assigned → started →
  finished), and what is left of the end to end (the 201 and the job_response's way back).

Runs alternate, A B A B, so that a drift of the machine touches both sides alike.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import requests

from bench.cluster import Cluster, Responses, docker_client, raw_container, summarise, wait_for


def run(cluster: Cluster, count: int, warmup: int = 2) -> dict[str, Any]:
    client = docker_client()
    freight, raw, dispatch, raw_start = [], [], [], []
    stages: dict[str, list[float]] = {}
    with Responses(cluster) as responses:
        for i in range(warmup + count):
            end_to_end, dispatched, job_stages = _one_job(cluster, responses)
            baseline, baseline_start = raw_container(client)
            if i >= warmup:
                freight.append(end_to_end)
                dispatch.append(dispatched)
                raw.append(baseline)
                raw_start.append(baseline_start)
                for stage, seconds in job_stages.items():
                    stages.setdefault(stage, []).append(seconds)
    result: dict[str, Any] = {
        "freight": summarise(freight),
        "raw_container": summarise(raw),
        "dispatch": summarise(dispatch),
        # The raw container's create + start alone: a floor under any dispatch through Docker.
        "raw_create_start": summarise(raw_start),
        "stages": {stage: summarise(seconds) for stage, seconds in stages.items()},
    }
    result["ratio_p50"] = round(result["freight"]["p50_ms"] / result["raw_container"]["p50_ms"], 3)
    result["ratio_p99"] = round(result["freight"]["p99_ms"] / result["raw_container"]["p99_ms"], 3)
    return result


STAGES = ("JobSubmitted", "JobAssigned", "JobStarted", "JobFinished")


def _one_job(cluster: Cluster, responses: Responses) -> tuple[float, float, dict[str, float]]:
    posted = time.monotonic()
    job_id = cluster.submit()
    accepted = time.time()  # wall clock: compared with the runner's started_at
    arrived, message = responses.wait_for(job_id)
    if message["status"] != "COMPLETE":
        raise RuntimeError(f"the benchmark's job {job_id} failed: {message['reason']}")
    job = wait_for(lambda: _with_start(cluster, job_id), 30, f"{job_id}'s started_at")
    started = datetime.fromisoformat(job["started_at"]).timestamp()
    return arrived - posted, started - accepted, _stages(cluster, job_id)


def _stages(cluster: Cluster, job_id: str) -> dict[str, float]:
    """Seconds between the job's events, as their writers stamped them (one machine's clock)."""
    events = requests.get(f"{cluster.url}/jobs/{job_id}/events", timeout=30).json()["events"]
    at = {e["type"]: datetime.fromisoformat(e["occurred_at"]).timestamp() for e in events}
    return {f"{a} → {b}": at[b] - at[a] for a, b in zip(STAGES, STAGES[1:], strict=False)}


def _with_start(cluster: Cluster, job_id: str) -> dict[str, Any] | None:
    job = cluster.job(job_id)
    return job if job.get("started_at") else None
