"""Scenario 2, throughput: N trivial jobs over K slots, against K parallel raw container runs.

Freight: N `POST /jobs` of `true` as fast as one client sends them, until the last
`job_response`; the runner has K slots. Baseline: the same N create + start + wait + remove
through the docker SDK on K threads. Rounds alternate, A B A B. Beside the rates, the CPU time
per job of each service and of the engine's daemons, in Freight's rounds and in the raw ones.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.cluster import Cluster, CpuMeter, Responses, docker_client, progress, raw_container


def run(cluster: Cluster, jobs: int, slots: int, rounds: int = 1) -> dict[str, Any]:
    freight, raw = [], []
    meter = CpuMeter(cluster)
    cpu: dict[str, dict[str, float]] = {"freight": {}, "raw": {}}
    with Responses(cluster) as responses:
        for n in range(rounds):
            progress(f"round {n + 1} of {rounds}: {jobs} jobs through Freight, then raw")
            meter.start()
            freight.append(_freight(cluster, responses, jobs))
            _add(cpu["freight"], meter.stop())
            meter.start()
            raw.append(_raw(jobs, slots))
            _add(cpu["raw"], meter.stop())
    freight_rate, raw_rate = max(freight), max(raw)
    return {
        "jobs": jobs,
        "slots": slots,
        "rounds": rounds,
        "freight_jobs_s": round(freight_rate, 2),
        "raw_container_jobs_s": round(raw_rate, 2),
        "ratio": round(freight_rate / raw_rate, 3),
        "freight_rounds_jobs_s": [round(r, 2) for r in freight],
        "raw_rounds_jobs_s": [round(r, 2) for r in raw],
        "cpu_ms_per_job": {
            side: {
                group: round(1000 * seconds / (jobs * rounds), 1) for group, seconds in by.items()
            }
            for side, by in cpu.items()
        },
    }


def _add(total: dict[str, float], more: dict[str, float]) -> None:
    for group, seconds in more.items():
        total[group] = total.get(group, 0.0) + seconds


def _freight(cluster: Cluster, responses: Responses, jobs: int) -> float:
    session = requests.Session()
    started = time.monotonic()
    ids = [cluster.submit(session) for _ in range(jobs)]
    return jobs / (responses.last_of(ids) - started)


def _raw(jobs: int, slots: int) -> float:
    local = threading.local()

    def one(_: int) -> tuple[float, float]:
        if not hasattr(local, "client"):
            local.client = docker_client()  # one connection per thread, as a runner slot
        return raw_container(local.client)

    started = time.monotonic()
    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(one, range(jobs)))
    return jobs / (time.monotonic() - started)
