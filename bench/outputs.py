"""Scenario: jobs whose own output is large, end to end against `docker run` of the same command.

- chatty: `--chatty-mb` MB of stdout in lines of 100 bytes (`yes … | head -c`);
- many files: `--many-files` small files (a few bytes each) written to the workdir;
- big file: one file of `--big-mib` MiB of random bytes written to the workdir.

Freight: `POST /jobs` of the command until its `job_response` (the job ended and everything it
printed and wrote was kept: its stdout as /.freight/stdout, its files as outputs); the cluster
keeps up to `FREIGHT_MAX_OUTPUT_FILES` = many files + 100 entries and `FREIGHT_MAX_OUTPUT_BYTES`
= the big file + 1 GiB so that nothing is skipped, and what it kept is counted from the API.
Baseline: `docker run --rm --network none` of the same command in the same image, its stdout to
/dev/null, alternating with Freight's (A B A B). Beside the times, the CPU seconds of each
service and of the engine's daemons in the last round.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.cluster import ALL_SERVICES, IMAGE, Cluster, CpuMeter, Responses, progress

MIB = 1024 * 1024


def commands(chatty_mb: int, many_files: int, big_mib: int) -> dict[str, tuple[str, str]]:
    """Each scenario's command, and the directory where what it keeps is listed."""
    return {
        "chatty": (f"yes {'x' * 99} | head -c {chatty_mb * 1_000_000}", "/.freight"),
        "many_files": (
            f"mkdir -p out && i=0 && while [ $i -lt {many_files} ]; do "
            'echo "$i" > out/f$i; i=$((i+1)); done',
            "/job/out",
        ),
        "big_file": (f"head -c {big_mib * MIB} /dev/urandom > big.bin", "/job"),
    }


def run(root: Path, chatty_mb: int, many_files: int, big_mib: int, rounds: int) -> dict[str, Any]:
    env = {
        "runner_slots": 1,
        "max_output_files": many_files + 100,
        "max_output_bytes": big_mib * MIB + 1024 * MIB,
    }
    results: dict[str, Any] = {}
    with Cluster(root, ALL_SERVICES, 60, **env) as cluster, Responses(cluster) as responses:
        meter = CpuMeter(cluster)
        for name, (command, kept_in) in commands(chatty_mb, many_files, big_mib).items():
            freight, raw, phases = [], [], []
            cpu: dict[str, dict[str, float]] = {}
            for n in range(rounds):
                progress(f"{name}, round {n + 1} of {rounds}: docker run, then Freight")
                meter.start()
                raw.append(_docker_run(command))
                cpu["raw"] = meter.stop()
                meter.start()
                seconds, job = _freight(cluster, responses, command)
                freight.append(seconds)
                phases.append(_phases(cluster, job, seconds))
                cpu["freight"] = meter.stop()
            best_freight, best_raw = min(freight), min(raw)
            best = freight.index(best_freight)
            results[name] = {
                "command": command,
                "freight_s": round(best_freight, 2),
                "docker_run_s": round(best_raw, 2),
                "ratio": round(best_freight / best_raw, 3),
                "freight_rounds_s": [round(s, 2) for s in freight],
                "docker_run_rounds_s": [round(s, 2) for s in raw],
                "cpu_s_last_round": cpu,
                "phases_s": phases[best],
                "kept": _kept(cluster, job, kept_in),
            }
    return results


def _docker_run(command: str) -> float:
    started = time.monotonic()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", IMAGE, "sh", "-c", command],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.monotonic() - started


def _freight(cluster: Cluster, responses: Responses, command: str) -> tuple[float, str]:
    started = time.monotonic()
    job_id = cluster.submit(command=command, timeout=3600)
    arrived, response = responses.wait_for(job_id, timeout=3600)
    if response["status"] != "COMPLETE":
        raise RuntimeError(f"job {job_id} ended {response['status']}: {cluster.job(job_id)}")
    return arrived - started, job_id


def _phases(cluster: Cluster, job_id: str, seconds: float) -> dict[str, float]:
    """Where a run's `seconds` went, by the times the services stamped on the job's events:
    until its command started; from there to JobOutputsSaved (the command's run, then its
    outputs read out and stored: the run is what `docker run` measures); from there to its
    `job_response` (the API's transaction, the response's publishing). Counted from
    JobSubmitted, a few milliseconds after the client began to send."""
    listed = requests.get(f"{cluster.url}/jobs/{job_id}/events", timeout=60)
    listed.raise_for_status()
    at = {e["type"]: datetime.fromisoformat(e["occurred_at"]) for e in listed.json()["events"]}

    def since_submitted(event: str) -> float:
        return (at[event] - at["JobSubmitted"]).total_seconds()

    started, saved = since_submitted("JobStarted"), since_submitted("JobOutputsSaved")
    return {
        "to_start": round(started, 3),
        "started_to_outputs_saved": round(saved - started, 3),
        "outputs_saved_to_response": round(seconds - saved, 3),
    }


def _kept(cluster: Cluster, job_id: str, directory: str) -> dict[str, int]:
    """What the job kept in `directory`: its files and their bytes."""
    listed = requests.get(
        f"{cluster.url}/jobs/{job_id}/files", params={"path": directory}, timeout=120
    )
    listed.raise_for_status()
    files = [e for e in listed.json()["entries"] if e["type"] == "file"]
    return {"files": len(files), "bytes": sum(int(e["size"]) for e in files)}


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    found = []
    for name, r in results.items():
        if not isinstance(r, dict) or "ratio" not in r:
            continue
        kept, phases = r["kept"], r.get("phases_s") or {}
        found.append(
            (
                f"6. output: {name.replace('_', ' ')}",
                f"{r['freight_s']:.2f} s",
                f"docker run {r['docker_run_s']:.2f} s",
                f"{r['ratio']:.2f}× (target ≤ 1.20); kept {kept['files']} files,"
                f" {kept['bytes'] / MIB:.1f} MiB",
            )
        )
        if phases:
            found.append(
                (
                    f"6.   {name.replace('_', ' ')}: where the time went",
                    f"to start {phases['to_start']:.2f} s",
                    f"started → outputs saved {phases['started_to_outputs_saved']:.2f} s",
                    f"outputs saved → response {phases['outputs_saved_to_response']:.2f} s",
                )
            )
    return found
