"""Scenario 3, the API alone: submits per second and latency at rising numbers of clients, beside
the ceiling this machine reaches with no Freight work (bench/ceiling.py).

Only the API (and the filestore, which multipart uploads go to) runs: no scheduler and no
runner, so jobs just queue and what is measured is the API's own work. Each client is a thread
with its own `requests.Session`, sending `POST /jobs` back to back. At each level Freight runs,
then the baseline app with the same gunicorn settings and the same client code (A B), so that a
drift of the machine touches both. A 503 is the API shedding load past capacity (admission
control): counted apart, not a success, and its own latency reported — shedding must be fast.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import requests

from bench.ceiling import Ceiling
from bench.cluster import Cluster, progress, summarise
from freight_server.shared.config import Settings

KIB = 1024


def run(cluster: Cluster, clients: list[int], requests_per_level: int) -> dict[str, Any]:
    payload = os.urandom(100 * KIB)
    settings = Settings.from_env(cluster.env)  # the API's own gunicorn settings
    levels: dict[str, Any] = {}
    with Ceiling(settings.api_workers, settings.api_threads, cluster.logs / "ceiling.log") as top:
        for kind in ("json", "multipart"):
            for count in clients:
                progress(f"{kind} at {count} clients")
                freight = _level(cluster.url, kind, count, requests_per_level, payload)
                ceiling = _level(top.url, kind, count, requests_per_level, payload)
                levels[f"{kind}@{count}"] = {
                    **freight,
                    "ceiling": ceiling,
                    "ratio": _ratio(freight["submits_s"], ceiling["submits_s"]),
                }
    return {
        "requests_per_level": requests_per_level,
        "api_workers": settings.api_workers,
        "api_threads": settings.api_threads,
        "api_max_concurrent": settings.api_max_concurrent,
        "api_admission_wait": settings.api_admission_wait,
        "levels": levels,
    }


def _ratio(freight: float, ceiling: float) -> float | None:
    return round(freight / ceiling, 3) if ceiling else None


def _level(url: str, kind: str, clients: int, total: int, payload: bytes) -> dict[str, Any]:
    timed: list[tuple[int, float]] = []
    lock = threading.Lock()
    per_client = max(1, total // clients)

    def client() -> None:
        session = requests.Session()
        mine = []
        for _ in range(per_client):
            started = time.monotonic()
            status = _submit(session, url, kind, payload)
            mine.append((status, time.monotonic() - started))
        with lock:
            timed.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    outcomes: dict[int, int] = {}
    for status, _ in timed:
        outcomes[status] = outcomes.get(status, 0) + 1
    accepted = [seconds for status, seconds in timed if status == 201]
    shed = [seconds for status, seconds in timed if status == 503]
    return {
        "kind": kind,
        "clients": clients,
        "submits_s": round(len(accepted) / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(outcomes.items())},
        **(summarise(accepted) if accepted else {}),
        **({"shed": summarise(shed)} if shed else {}),
    }


def _submit(session: requests.Session, url: str, kind: str, payload: bytes) -> int:
    try:
        if kind == "json":
            response = session.post(f"{url}/jobs", json={"command": "true"}, timeout=60)
        else:
            response = session.post(
                f"{url}/jobs",
                data={"command": "sha256sum /job/data.bin"},
                files={"file[]": (f"data-{uuid.uuid4().hex[:6]}.bin", payload)},
                timeout=60,
            )
    except requests.RequestException:
        return 0  # no answer at all (refused, reset or timed out)
    return response.status_code


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's target: ≥ 600 submits/s at 32 clients with p99 ≤ 100 ms (JSON)."""
    at32 = result["levels"].get("json@32")
    if not at32:
        return {}
    return {"json@32_submits_s": at32["submits_s"], "json@32_p99_ms": at32.get("p99_ms")}
