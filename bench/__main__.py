"""`make bench`: every scenario in turn, Freight beside what the machine does without it.

    python -m bench [--latency-jobs 30] [--throughput-jobs 100] [--slots 4] [--rounds 2]
                    [--api-requests 400] [--api-clients 1,8,32,128]
                    [--scale-jobs 100000] [--scale-reads 300] [--placement-jobs 10000]
                    [--files-mib 64] [--chatty-mb 200] [--many-files 20000] [--big-mib 2048]
                    [--controlplane-jobs 2000] [--controlplane-slots 32]
                    [--fleet-jobs 20000] [--fleet-runners 8]
                    [--only latency,throughput,api,scale,placement,files,outputs,controlplane,fleet]

Each scenario starts its own services (see bench/cluster.py) on the RabbitMQ at FREIGHT_AMQP_URL
and the local Docker engine; Freight and its baseline alternate within a run (A B A B) so that
a drift of the machine touches both. Prints one table, writes bench/results/bench-<time>.json
and a PNG plot beside it. docs/benchmarks.md says what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import api, controlplane, fleet, latency, outputs, placement, scale, throughput
from bench import files as files_bench
from bench.cluster import ALL_SERVICES, Cluster
from bench.plot import plot

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = (
    "latency",
    "throughput",
    "api",
    "scale",
    "placement",
    "files",
    "outputs",
    "controlplane",
    "fleet",
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chosen = [s for s in args.only.split(",") if s] if args.only else list(SCENARIOS)
    results: dict[str, Any] = {
        "benchmark": "bench",
        "at": datetime.now(UTC).isoformat(),
        "machine": _machine(),
        "arguments": vars(args),
        "scenarios": {},
    }
    runs: dict[str, Callable[[Path], dict[str, Any]]] = {
        "latency": lambda root: _with_cluster(
            root, lambda c: latency.run(c, args.latency_jobs), runner_slots=args.slots
        ),
        "throughput": lambda root: _with_cluster(
            root,
            lambda c: throughput.run(c, args.throughput_jobs, args.slots, args.rounds),
            runner_slots=args.slots,
        ),
        "api": lambda root: _with_cluster(
            root,
            lambda c: api.run(c, [int(n) for n in args.api_clients.split(",")], args.api_requests),
            services=("filestore", "api"),  # no scheduler, no runner: jobs only queue
        ),
        "scale": lambda root: scale.run(root, args.scale_jobs, args.scale_reads),
        "placement": lambda root: placement.run(root, args.placement_jobs, args.slots),
        "files": lambda root: _files(root, args.files_mib),
        "outputs": lambda root: outputs.run(
            root, args.chatty_mb, args.many_files, args.big_mib, args.rounds
        ),
        "controlplane": lambda root: _with_cluster(
            root,
            lambda c: controlplane.run(c, args.controlplane_jobs, args.controlplane_slots),
            runner_slots=args.controlplane_slots,
            runner_executor="local",
        ),
        "fleet": lambda root: fleet.run(root, args.fleet_jobs, args.fleet_runners, args.slots),
    }
    with tempfile.TemporaryDirectory(prefix="freight-bench-") as scratch:
        for name in chosen:
            print(f"[bench] {name} …", flush=True)
            started = time.monotonic()
            try:
                results["scenarios"][name] = runs[name](Path(scratch))
            except Exception as exc:  # one scenario failing keeps the others' figures
                print(f"[bench] {name} failed: {exc!r}", flush=True)
                results.setdefault("failed", {})[name] = repr(exc)
                continue
            results["scenarios"][name]["seconds"] = round(time.monotonic() - started, 1)
            print(f"[bench] {name} done in {time.monotonic() - started:.0f} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"written to {out}")
    for name, error in results.get("failed", {}).items():
        print(f"FAILED {name}: {error}")
    picture = plot(results, RESULTS / f"bench-{stamp}.png")
    if picture:
        print(f"plotted to {picture}")
    return 1 if results.get("failed") else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--latency-jobs", type=int, default=30)
    parser.add_argument("--throughput-jobs", type=int, default=100)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds (A B each)")
    parser.add_argument("--api-requests", type=int, default=400, help="requests per level")
    parser.add_argument("--api-clients", default="1,8,32,128")
    parser.add_argument("--scale-jobs", type=int, default=100_000, help="jobs seeded")
    parser.add_argument("--scale-reads", type=int, default=300)
    parser.add_argument(
        "--placement-jobs", type=int, default=10_000, help="jobs queued before placing"
    )
    parser.add_argument("--files-mib", type=int, default=64)
    parser.add_argument("--chatty-mb", type=int, default=200, help="MB a chatty job prints")
    parser.add_argument("--many-files", type=int, default=20_000, help="files a job writes")
    parser.add_argument("--big-mib", type=int, default=2048, help="MiB of one output file")
    parser.add_argument("--controlplane-jobs", type=int, default=2000)
    parser.add_argument("--controlplane-slots", type=int, default=32)
    parser.add_argument("--fleet-jobs", type=int, default=20_000, help="jobs queued for the fleet")
    parser.add_argument("--fleet-runners", type=int, default=8)
    parser.add_argument("--only", default="", help=f"a comma-separated subset of {SCENARIOS}")
    return parser


def _with_cluster(
    root: Path,
    scenario: Callable[[Cluster], dict[str, Any]],
    services: tuple[str, ...] = ALL_SERVICES,
    **env: str | int | float,
) -> dict[str, Any]:
    with Cluster(root, services, 60, **env) as cluster:
        return scenario(cluster)


def _files(root: Path, size_mib: int) -> dict[str, Any]:
    """bench/files.py's measure, at a size that keeps `make bench` short."""
    size = size_mib * files_bench.MIB
    work = root / "files"
    work.mkdir()
    source = files_bench.write_random(work / "data.bin", size)
    digest = files_bench.sha256_of(source)
    local = files_bench.time_local_copy(source, work / "copy.bin")
    with Cluster(root) as cluster:
        measured = files_bench.measure(cluster, source, digest)
    result: dict[str, Any] = {
        "size_bytes": size,
        "local_copy_mb_s": files_bench.mb_per_s(size, local),
    }
    for name, seconds in measured.items():
        result[f"{name}_mb_s"] = files_bench.mb_per_s(size, seconds)
        result[f"{name}_ratio"] = round(result[f"{name}_mb_s"] / result["local_copy_mb_s"], 3)
    return result


def _machine() -> dict[str, Any]:
    cpus = os.cpu_count()
    return {
        "cpus": cpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "summary": f"{cpus} CPUs, {platform.system()} {platform.release()}",
    }


def table(results: dict[str, Any]) -> str:
    """One line a figure: Freight, its baseline or target, and the ratio."""
    rows: list[tuple[str, str, str, str]] = []
    s = results["scenarios"]
    if "latency" in s:
        r = s["latency"]
        for p in ("p50", "p99"):
            rows.append(
                (
                    f"1. end to end {p}",
                    f"{r['freight'][f'{p}_ms']:.0f} ms",
                    f"{r['raw_container'][f'{p}_ms']:.0f} ms raw",
                    f"{r[f'ratio_{p}']:.2f}× (target ≤ 1.10)",
                )
            )
        rows.append(
            (
                "1. dispatch p50",
                f"{r['dispatch']['p50_ms']:.0f} ms",
                "target 10 ms",
                f"{r['dispatch']['p50_ms'] / 10:.1f}×",
            )
        )
        rows.append(
            (
                "1. dispatch p99",
                f"{r['dispatch']['p99_ms']:.0f} ms",
                "target 50 ms",
                f"{r['dispatch']['p99_ms'] / 50:.1f}×",
            )
        )
        floor = r["raw_create_start"]["p50_ms"]
        rows.append(
            (
                "1. dispatch p50 less Docker",
                f"{r['dispatch']['p50_ms'] - floor:.0f} ms",
                f"Docker's create + start {floor:.0f} ms",
                "Freight's own share",
            )
        )
        for stage, summary in r.get("stages", {}).items():
            rows.append((f"1. {stage}", f"p50 {summary['p50_ms']:.0f} ms", "", ""))
    if "throughput" in s:
        r = s["throughput"]
        rows.append(
            (
                f"2. {r['jobs']} jobs / {r['slots']} slots",
                f"{r['freight_jobs_s']:.2f} jobs/s",
                f"{r['raw_container_jobs_s']:.2f} jobs/s raw",
                f"{r['ratio']:.2f}× (target ≥ 0.90)",
            )
        )
        cpu = r.get("cpu_ms_per_job", {})
        if cpu:
            mine = " ".join(f"{g} {ms:.0f}" for g, ms in cpu["freight"].items())
            engine = " ".join(f"{g} {cpu['raw'].get(g, 0):.0f}" for g in ("dockerd", "containerd"))
            rows.append(("2. CPU ms/job", mine, f"raw: {engine}", ""))
    if "api" in s:
        for key, level in s["api"]["levels"].items():
            shed = level.get("shed", {})
            other = sum(v for k, v in level["statuses"].items() if k not in ("201", "503"))
            top = level.get("ceiling", {})
            rows.append(
                (
                    f"3. API {key}",
                    f"{level['submits_s']:.0f} submits/s"
                    + f", p50 {level.get('p50_ms', 0):.0f} / p99 {level.get('p99_ms', 0):.0f} ms",
                    f"ceiling {top.get('submits_s', 0):.0f}/s, p99 {top.get('p99_ms', 0):.0f} ms",
                    f"{level.get('ratio') or 0:.2f}× of ceiling"
                    + f", {level['submits_s'] / 600:.2f}× of 600/s"
                    + (f", {shed['n']} × 503 p99 {shed['p99_ms']:.0f} ms" if shed else "")
                    + (f", {other} other" if other else ""),
                )
            )
    if "scale" in s:
        r = s["scale"]
        rows.append(
            (
                f"4. rebuild {r['events']} events",
                f"{r['rebuild_events_s']:.0f} events/s",
                "target 5000 events/s",
                f"{r['rebuild_events_s'] / 5000:.2f}×",
            )
        )
        reads = {"GET /jobs/{id}": r["get_job"]} | {
            f"GET /jobs page, {name}": summary for name, summary in r.get("pages", {}).items()
        }
        for what, summary in reads.items():
            rows.append(
                (
                    f"4. {what} ({r['jobs']} jobs)",
                    f"p50 {summary['p50_ms']:.1f} ms",
                    f"p99 {summary['p99_ms']:.1f} ms, target 20",
                    f"{summary['p99_ms'] / 20:.2f}×",
                )
            )
    if "placement" in s:
        rows += placement.rows(s["placement"])
    if "files" in s:
        r = s["files"]
        for name in ("upload", "into_job", "download"):
            rows.append(
                (
                    f"5. files {name}",
                    f"{r[f'{name}_mb_s']:.0f} MB/s",
                    f"{r['local_copy_mb_s']:.0f} MB/s local copy",
                    f"{r[f'{name}_ratio']:.2f}×",
                )
            )
    if "outputs" in s:
        rows += outputs.rows(s["outputs"])
    if "controlplane" in s:
        rows += controlplane.rows(s["controlplane"])
    if "fleet" in s:
        rows += fleet.rows(s["fleet"])
    widths = [max(len(row[i]) for row in rows) for i in range(4)] if rows else [0] * 4
    header = f"Freight against the machine ({results['machine']['summary']})"
    lines = [header]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
