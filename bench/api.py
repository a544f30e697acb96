"""Scenario 3, the API alone: submits per second and latency at rising numbers of clients.

Only the API (and the filestore, which multipart uploads go to) runs: no scheduler and no
runner, so jobs just queue and what is measured is the API's own work. Each client is a thread
with its own `requests.Session`, sending `POST /jobs` back to back. A 503 is the API shedding
load: counted apart, and not a success.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

import requests

from bench.cluster import Cluster, summarise

KIB = 1024


def run(cluster: Cluster, clients: list[int], requests_per_level: int) -> dict[str, Any]:
    payload = os.urandom(100 * KIB)
    levels: dict[str, Any] = {}
    for kind in ("json", "multipart"):
        for count in clients:
            levels[f"{kind}@{count}"] = _level(cluster, kind, count, requests_per_level, payload)
    return {"requests_per_level": requests_per_level, "levels": levels}


def _level(cluster: Cluster, kind: str, clients: int, total: int, payload: bytes) -> dict[str, Any]:
    latencies: list[float] = []
    outcomes: dict[int, int] = {}
    lock = threading.Lock()
    per_client = max(1, total // clients)

    def client() -> None:
        session = requests.Session()
        mine, codes = [], []
        for _ in range(per_client):
            started = time.monotonic()
            status = _submit(session, cluster.url, kind, payload)
            mine.append(time.monotonic() - started)
            codes.append(status)
        with lock:
            latencies.extend(t for t, c in zip(mine, codes, strict=True) if c == 201)
            for c in codes:
                outcomes[c] = outcomes.get(c, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    accepted = outcomes.get(201, 0)
    return {
        "kind": kind,
        "clients": clients,
        "submits_s": round(accepted / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(outcomes.items())},
        **(summarise(latencies) if latencies else {}),
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
