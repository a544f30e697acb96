"""Scenario: the control plane alone. N trivial jobs (`true`) through the local executor, so no
container engine takes the machine's CPU; what is left is Freight's own cost per job.

Freight: C client threads send `POST /jobs` back to back until the last `job_response`; the runner
has K slots (32 by default) and runs each command as a subprocess. Beside the rate, the CPU time
per job of each service, of the local executor's supervisor (which starts the commands and
records their output and exit codes; counted with the services), of the broker (RabbitMQ's
`beam.smp`), and of the jobs' own processes (the shell, `true`). Baseline: the same N commands
run through `subprocess` on K threads, the physical limit of this machine for starting that many
processes.
"""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.cluster import Cluster, CpuMeter, Responses, progress


def run(cluster: Cluster, jobs: int, slots: int, clients: int = 8) -> dict[str, Any]:
    meter = CpuMeter(cluster, children=True)
    with Responses(cluster) as responses:
        progress(f"{jobs} jobs from {clients} clients through Freight ({slots} local slots)")
        meter.start()
        freight = _freight(cluster, responses, jobs, clients)
        cpu = meter.stop()
        progress(f"{jobs} raw subprocesses on {slots} threads")
        raw = _raw(jobs, slots)
    # The local executor's supervisor is Freight's own too.
    ours = (*cluster.services, "supervisor")
    services = sum(seconds for group, seconds in cpu.items() if group in ours)
    return {
        "jobs": jobs,
        "slots": slots,
        "clients": clients,
        "freight_jobs_s": round(freight, 1),
        "raw_process_jobs_s": round(raw, 1),
        "ratio": round(freight / raw, 3),
        "cpu_ms_per_job": {group: round(1000 * s / jobs, 1) for group, s in cpu.items()},
        "services_cpu_ms_per_job": round(1000 * services / jobs, 1),
    }


def _freight(cluster: Cluster, responses: Responses, jobs: int, clients: int) -> float:
    def send(count: int) -> list[str]:
        session = requests.Session()
        return [cluster.submit(session) for _ in range(count)]

    shares = [jobs // clients + (1 if n < jobs % clients else 0) for n in range(clients)]
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        ids = [job_id for sent in pool.map(send, shares) for job_id in sent]
    return jobs / (responses.last_of(ids) - started)


def _raw(jobs: int, slots: int) -> float:
    def one(_: int) -> None:
        subprocess.run(["sh", "-c", "true"], check=True)

    started = time.monotonic()
    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(one, range(jobs)))
    return jobs / (time.monotonic() - started)


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    cpu = " ".join(f"{group} {ms:.1f}" for group, ms in r["cpu_ms_per_job"].items() if ms)
    return [
        (
            f"7. control plane, {r['jobs']} jobs / {r['slots']} local slots",
            f"{r['freight_jobs_s']:.0f} jobs/s",
            "target 150 jobs/s",
            f"{r['freight_jobs_s'] / 150:.2f}×",
        ),
        (
            "7. services' CPU ms/job",
            f"{r['services_cpu_ms_per_job']:.1f} ms",
            "target 15 ms",
            f"{r['services_cpu_ms_per_job'] / 15:.2f}×; {cpu}",
        ),
    ]
