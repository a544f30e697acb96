"""Scenario: a fleet. Many runners drain a deep queue of several owners' trivial jobs.

    python -m bench.fleet [--jobs 20000] [--runners 8] [--slots 4] [--root DIR]

The log is seeded before any service starts with `jobs` JobSubmitted events (`true`, the data the
API itself writes for `{"command": "true"}`), owned by `OWNERS` users in blocks: all of the first
owner's jobs, then all of the second's, and so on, so that a FIFO scheduler would serve them one
after the other and only fair share interleaves them. Then the filestore, the API (ready once its
tables hold the whole seed: `FREIGHT_READY_MAX_LAG=0`) and the scheduler start, and after them
`runners` runners, each its own process with its own `FREIGHT_RUNNER_ID`, `FREIGHT_HOME` (its
SQLite database and `local-jobs` directory) and `slots` slots, on the local executor
(`FREIGHT_RUNNER_EXECUTOR=local`: commands as subprocesses, no container engine). Nothing is
placed before the first runner's heartbeat, so the drain is measured whole.

The API is polled (`GET /jobs?limit=1`, its count of unfinished jobs) until the queue is empty;
then the log is read from its start, and every figure comes from the events' own times
(`occurred_at`, stamped by the service that appended them):

- placements per second: JobAssigned events over the time from the first to the last, and in
  each tenth of the drain;
- the drain: from the first JobAssigned to the last JobFinished;
- per runner, the jobs it finished (none starves: each gets work), and in each tenth how many
  runners finished nothing;
- per owner, their share of the jobs finished in each tenth (fair share: about 1 / `OWNERS` in
  every tenth, even though the owners' jobs were queued one owner after the other);
- slot occupancy: the time jobs held slots (JobAssigned to JobFinished) over the fleet's slot
  time during the drain;
- CPU ms per job of each service, each runner, the broker and the engine daemons
  (bench/cluster.py CpuMeter, from the runners' start to the empty queue: the API's and the
  scheduler's replay of the seed is mostly before it, the runners' own is in it);
- warnings and errors in each service's log.

Writes bench/results/fleet-<time>.json and prints a summary (`table_lines`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import requests

from bench.cluster import IMAGE, Cluster, CpuMeter, percentile, progress
from freight_server.services.api.submission import parse_job_request
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.events import EventFactory, EventType

RESULTS = Path(__file__).resolve().parent / "results"
OWNERS = 4
SEED_BATCH = 500  # events a confirm: seeding is not what is measured
WINDOWS = 10  # the drain is reported in tenths
POLL = 1.0  # seconds between looks at the API's count of unfinished jobs
REPORT_EVERY = 15.0  # seconds between progress lines while draining
STALL_AFTER = 180.0  # seconds without one more job ending: the drain is stuck
READ_TIMEOUT = 600.0  # seconds to read the log back once the queue is empty
# A service's own lines ("<date> <time> LEVEL service logger: ..."), and gunicorn's.
LOG_PROBLEM = re.compile(r"^(?:\S+ \S+ |\[[^]]*\] \[\d+\] \[)(WARNING|ERROR|CRITICAL)[ \]]")


class Fleet(Cluster):
    """The filestore, the API and the scheduler as Cluster starts them, then `runners` runners,
    each a process with its own id, home (database and work directory) and log. Their names in
    `services` are `runner-0` … so that CpuMeter reports each apart."""

    def __init__(self, root: Path, runners: int, slots: int, **env: str | int | float):
        super().__init__(
            root, ("filestore", "api", "scheduler"), ready_timeout=600, ready_max_lag=0, **env
        )
        self.slots = slots
        self.runner_ids = [f"{self.namespace}-runner-{n}" for n in range(runners)]

    def __enter__(self) -> Fleet:
        super().__enter__()  # the API is ready: its tables hold the seed
        try:
            for n, runner_id in enumerate(self.runner_ids):
                name = f"runner-{n}"
                env = {
                    **self.env,
                    "FREIGHT_RUNNER_ID": runner_id,
                    "FREIGHT_HOME": str(self.root / name),
                    "FREIGHT_RUNNER_EXECUTOR": "local",
                    "FREIGHT_RUNNER_SLOTS": str(self.slots),
                }
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "freight.cli", "serve", "runner"],
                        env=env,
                        stdout=open(self.logs / f"{name}.log", "wb"),  # noqa: SIM115
                        stderr=subprocess.STDOUT,
                    )
                )
                self.services = (*self.services, name)
        except BaseException:
            self.__exit__()
            raise
        return self

    def topology(self) -> Topology:
        """The topology exactly as the services declare it (the same bounds on job_response)."""
        return Topology.from_settings(Settings.from_env(self.env))

    def dead(self) -> list[str]:
        """The services whose process has exited."""
        return [
            s for s, p in zip(self.services, self.processes, strict=True) if p.poll() is not None
        ]


def run(root: Path, jobs: int, runners: int, slots: int) -> dict[str, Any]:
    fleet = Fleet(root, runners, slots)
    owners = [f"bench-{n}" for n in range(OWNERS)]
    progress(f"queueing {jobs} jobs of {len(owners)} owners")
    try:
        started = time.monotonic()
        owner_of = _seed(fleet, jobs, owners)
        seeded = time.monotonic() - started
        progress(f"seeded in {seeded:.1f} s; starting the services and {runners} runners")
        with fleet:
            meter = CpuMeter(fleet)
            meter.start()
            runners_started = time.time()
            _drain(fleet, jobs)
            cpu = meter.stop()
            progress("the queue is empty; reading the log back")
            events = _read_log(fleet, set(owner_of))
            problems = _log_problems(fleet.logs)
    finally:
        if not fleet.processes:  # it never started: __exit__ did not delete the streams
            fleet._delete_topology()
    result = _figures(events, owner_of, fleet.runner_ids, slots)
    # The runners' own start (imports, migrations, replaying the seed) until the first placement.
    result["runners_start_to_first_placement_s"] = round(
        result.pop("first_placed_at") - runners_started, 2
    )
    runner_groups = [s for s in fleet.services if s.startswith("runner-")]
    runners_cpu = sum(cpu.get(g, 0.0) for g in runner_groups)
    result.update(
        {
            "jobs": jobs,
            "runners": runners,
            "slots": slots,
            "owners": len(owners),
            "seed_s": round(seeded, 2),
            "cpu_s": cpu,
            "cpu_ms_per_job": {
                **{g: round(1000 * s / jobs, 2) for g, s in cpu.items() if g not in runner_groups},
                "runners": round(1000 * runners_cpu / jobs, 2),
            },
            "cpu_ms_per_job_per_runner": {
                g: round(1000 * cpu.get(g, 0.0) / jobs, 2) for g in runner_groups
            },
            "log_problems": problems,
            "logs": str(fleet.logs),
        }
    )
    return result


def _seed(fleet: Fleet, jobs: int, owners: list[str]) -> dict[str, str]:
    """`jobs` submissions, each owner's in one block, oldest first: {job id: owner}."""
    data = parse_job_request({"command": ["true"]}, IMAGE).event_data()
    api = EventFactory("api")
    owner_of = {str(uuid.uuid4()): owners[n * len(owners) // jobs] for n in range(jobs)}
    ids = list(owner_of)
    publisher = Publisher(fleet.amqp_url, fleet.topology(), "bench-seed", timeout=120)
    try:
        for start in range(0, jobs, SEED_BATCH):
            publisher.append(
                *[
                    api(EventType.JOB_SUBMITTED, job_id, **data, owner=owner_of[job_id])
                    for job_id in ids[start : start + SEED_BATCH]
                ]
            )
    finally:
        publisher.close()
    return owner_of


def _drain(fleet: Fleet, jobs: int) -> None:
    """Wait until the API counts no unfinished job; fail if a service dies or the drain stalls."""
    session = requests.Session()
    started = last_change = last_report = time.monotonic()
    left = jobs
    while left:
        time.sleep(POLL)
        now = time.monotonic()
        dead = fleet.dead()
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited during the drain (logs: {fleet.logs})")
        try:
            response = session.get(f"{fleet.url}/jobs", params={"limit": "1"}, timeout=30)
        except requests.RequestException:
            continue  # a busy machine: look again
        if response.status_code == 503:
            continue
        response.raise_for_status()
        count = int(response.json()["count"])
        if count != left:
            left, last_change = count, now
        elif now - last_change > STALL_AFTER:
            raise TimeoutError(f"{left} jobs unfinished, none ended in {STALL_AFTER:.0f} s")
        if now - last_report >= REPORT_EVERY:
            done = jobs - left
            progress(f"{done} of {jobs} ended after {now - started:.0f} s")
            last_report = now


def _read_log(fleet: Fleet, ids: set[str]) -> list[tuple[str, str | None, float, dict[str, Any]]]:
    """(type, job id, occurred_at as epoch seconds, data) of every event in the log, from the
    first until each of `ids` has its JobFinished and the stream falls quiet."""
    events: list[tuple[str, str | None, float, dict[str, Any]]] = []
    unfinished = set(ids)
    connection = pika.BlockingConnection(pika.URLParameters(fleet.amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=2000)
    last_tag = acked = 0

    def on_message(ch: Any, method: Any, _properties: Any, body: bytes) -> None:
        nonlocal last_tag, acked
        raw = json.loads(body)
        at = datetime.fromisoformat(raw["occurred_at"]).timestamp()
        events.append((raw["type"], raw.get("job_id"), at, raw.get("data") or {}))
        if raw["type"] == EventType.JOB_FINISHED:
            unfinished.discard(raw.get("job_id"))
        last_tag = method.delivery_tag
        if last_tag - acked >= 500:
            ch.basic_ack(last_tag, multiple=True)
            acked = last_tag

    channel.basic_consume(
        f"{fleet.namespace}.events", on_message, arguments={"x-stream-offset": "first"}
    )
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        while unfinished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(unfinished)} jobs have no JobFinished in the log")
            connection.process_data_events(time_limit=0.2)
        # Until nothing more comes: pika rejects deliveries still pending when a connection
        # closes, which a stream refuses by closing the connection with an error.
        seen = -1
        while len(events) != seen:
            seen = len(events)
            connection.process_data_events(time_limit=0.5)
        if last_tag > acked:
            channel.basic_ack(last_tag, multiple=True)
    finally:
        if connection.is_open:
            connection.close()
    return events


def _figures(
    events: list[tuple[str, str | None, float, dict[str, Any]]],
    owner_of: dict[str, str],
    runner_ids: list[str],
    slots: int,
) -> dict[str, Any]:
    assigned: dict[str, float] = {}  # a job's last JobAssigned
    assignments: list[float] = []  # every JobAssigned, retries included
    finished: dict[str, tuple[float, str, str]] = {}  # job: (at, runner, outcome)
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for kind, job_id, at, data in events:
        kinds[kind] += 1
        if job_id not in owner_of:
            continue
        if kind == EventType.JOB_ASSIGNED:
            assigned[job_id] = at
            assignments.append(at)
        elif kind == EventType.JOB_FINISHED:
            finished[job_id] = (at, str(data.get("runner")), str(data.get("outcome")))
            if data.get("outcome") != "succeeded":
                reasons[str(data.get("reason"))] += 1
    assignments.sort()
    first, last = assignments[0], max(at for at, _, _ in finished.values())
    drain = last - first
    placing = assignments[-1] - assignments[0]
    width = drain / WINDOWS
    owners = sorted(set(owner_of.values()))
    short = {r: f"runner-{n}" for n, r in enumerate(runner_ids)}

    def window(at: float) -> int:
        return min(WINDOWS - 1, int((at - first) / width)) if width else 0

    placed_in = Counter(window(at) for at in assignments)
    told_in = Counter(
        window(at) for kind, _job, at, _ in events if kind == EventType.JOB_WAITING and at >= first
    )
    ended_in: dict[int, Counter[str]] = defaultdict(Counter)  # window: {owner: jobs}
    ran_in: dict[int, Counter[str]] = defaultdict(Counter)  # window: {runner: jobs}
    per_runner: Counter[str] = Counter()
    for job_id, (at, runner, _) in finished.items():
        ended_in[window(at)][owner_of[job_id]] += 1
        ran_in[window(at)][runner] += 1
        per_runner[runner] += 1
    tenths: list[dict[str, Any]] = []
    for w in range(WINDOWS):
        ended = sum(ended_in[w].values())
        tenths.append(
            {
                "from_s": round(w * width, 2),
                "placements": placed_in[w],
                "placements_s": round(placed_in[w] / width, 1) if width else 0.0,
                "finished": ended,
                "reasons_told": told_in[w],  # JobWaiting: the scheduler saying why jobs wait
                "owner_share": {
                    o: round(ended_in[w][o] / ended, 3) if ended else 0.0 for o in owners
                },
                "idle_runners": sum(1 for r in runner_ids if not ran_in[w][r]),
            }
        )
    per_second = Counter(int(at - first) for at in assignments)
    seconds = [float(per_second[s]) for s in range(int(placing) + 1)]
    held = [finished[j][0] - assigned[j] for j in finished if j in assigned]
    counts = [per_runner[r] for r in runner_ids]
    shares = [t["owner_share"][o] for t in tenths for o in owners]
    owner_last = {
        o: round((max(at for j, (at, _, _) in finished.items() if owner_of[j] == o) - first), 2)
        for o in owners
    }
    return {
        "first_placed_at": first,  # epoch seconds
        "drain_s": round(drain, 2),
        "jobs_s": round(len(finished) / drain, 1) if drain else 0.0,
        "placements": len(assignments),
        "placements_s": round(len(assignments) / placing, 1) if placing else 0.0,
        "placements_per_second": {
            "p10": percentile(seconds, 10),
            "p50": statistics.median(seconds),
            "p90": percentile(seconds, 90),
            "max": max(seconds),
        },
        "tenths": tenths,
        "jobs_per_runner": {short[r]: per_runner[r] for r in runner_ids},
        "runner_spread": round(min(counts) / max(counts), 3) if max(counts) else 0.0,
        "starved_runners": [short[r] for r in runner_ids if not per_runner[r]],
        "owner_share_min": min(shares),
        "owner_share_max": max(shares),
        "owner_last_finished_s": owner_last,
        "slot_occupancy": round(sum(held) / (len(runner_ids) * slots * drain), 3) if drain else 0,
        "held_ms": {
            "p50": round(statistics.median(held) * 1000, 1),
            "p99": round(percentile(held, 99) * 1000, 1),
        },
        "failed": sum(reasons.values()),
        "failed_reasons": dict(reasons.most_common(5)),
        "events": dict(kinds),
    }


def _log_problems(logs: Path) -> dict[str, Any]:
    """Per service log: its warnings and errors counted, and the first few distinct ones."""
    found: dict[str, Any] = {}
    for path in sorted(logs.glob("*.log")):
        levels: Counter[str] = Counter()
        first: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            match = LOG_PROBLEM.match(line)
            if match:
                levels[match.group(1)] += 1
            elif line.startswith("Traceback"):
                levels["Traceback"] += 1
            else:
                continue
            text = line.split(" ", 4)[-1][:200]
            if len(first) < 3 and text not in first:
                first.append(text)
        if levels:
            found[path.stem] = {"counts": dict(levels), "first": first}
    return found


def table_lines(result: dict[str, Any]) -> list[str]:
    """A few lines for people."""
    r = result
    tenths = r["tenths"]
    by_tenth = ", ".join(f"{t['placements_s']:.0f}" for t in tenths)
    each_second = "/".join(
        f"{r['placements_per_second'][p]:.0f}" for p in ("p10", "p50", "p90", "max")
    )
    told = sum(t["reasons_told"] for t in tenths)
    per_runner = " ".join(str(n) for n in r["jobs_per_runner"].values())
    starved = ", ".join(r["starved_runners"]) or "none"
    cpu, one = r["cpu_ms_per_job"], r["cpu_ms_per_job_per_runner"].values()
    services = ("api", "scheduler", "filestore", "runners", "broker")
    lines = [
        f"fleet: {r['jobs']} jobs of {r['owners']} owners, {r['runners']} local runners"
        f" × {r['slots']} slots; first placement {r['runners_start_to_first_placement_s']:.1f} s"
        " after the runners' start",
        f"  drain {r['drain_s']:.1f} s (first JobAssigned → last JobFinished),"
        f" {r['jobs_s']:.1f} jobs/s; slots occupied {r['slot_occupancy']:.0%};"
        f" a job held its slot p50 {r['held_ms']['p50']:.0f} / p99 {r['held_ms']['p99']:.0f} ms",
        f"  placements {r['placements_s']:.1f}/s overall; in each second p10/p50/p90/max"
        f" {each_second}; by tenth {by_tenth}/s; {told} JobWaiting meanwhile",
        f"  jobs per runner: {per_runner} (min/max {r['runner_spread']:.2f}; starved: {starved});"
        f" runners idle in a tenth: {max(t['idle_runners'] for t in tenths)} at most",
        f"  owners' share of each tenth's jobs: {r['owner_share_min']:.2f}–"
        f"{r['owner_share_max']:.2f} (fair: {1 / r['owners']:.2f}); failed {r['failed']}",
        "  CPU ms/job: "
        + ", ".join(f"{s} {cpu[s]:.1f}" for s in services if s in cpu)
        + f" (one runner {min(one):.1f}–{max(one):.1f})",
    ]
    problems = r.get("log_problems") or {}
    if problems:
        counted = "; ".join(
            f"{service} " + " ".join(f"{n} {level}" for level, n in p["counts"].items())
            for service, p in problems.items()
        )
        lines.append(f"  service logs: {counted}")
    return lines


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The same figures as rows of bench/__main__.py's table (scenario 8)."""
    r = result
    placed = [t["placements_s"] for t in r["tenths"]]
    counts = r["jobs_per_runner"].values()
    cpu = r["cpu_ms_per_job"]
    services = sum(cpu.get(s, 0.0) for s in ("api", "scheduler", "filestore", "runners"))
    return [
        (
            f"8. fleet, {r['jobs']} jobs / {r['runners']} runners × {r['slots']} local slots",
            f"drain {r['drain_s']:.0f} s, {r['jobs_s']:.1f} jobs/s",
            f"placements {r['placements_s']:.1f}/s (tenths {min(placed):.0f}–{max(placed):.0f})",
            f"slots occupied {r['slot_occupancy']:.0%}",
        ),
        (
            "8. fleet: nothing starves",
            f"jobs per runner {min(counts)}–{max(counts)}",
            f"owners' share of a tenth {r['owner_share_min']:.2f}–{r['owner_share_max']:.2f}",
            f"fair {1 / r['owners']:.2f}; starved: {', '.join(r['starved_runners']) or 'none'}",
        ),
        (
            "8. fleet: services' CPU ms/job",
            f"{services:.1f} ms",
            f"runners {cpu['runners']:.1f}, scheduler {cpu.get('scheduler', 0):.1f},"
            f" API {cpu.get('api', 0):.1f}, filestore {cpu.get('filestore', 0):.1f}",
            f"broker {cpu.get('broker', 0):.1f}" if "broker" in cpu else "",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runners", type=int, default=8)
    parser.add_argument("--slots", type=int, default=4, help="slots of each runner")
    parser.add_argument(
        "--root", type=Path, help="keep the services' logs and databases here (default: deleted)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="freight-bench-") as scratch:
        root = args.root or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        result = run(root, args.jobs, args.runners, args.slots)
    cpus = os.cpu_count()
    results = {
        "benchmark": "fleet",
        "at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": cpus, "platform": platform.platform()},
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **result,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fleet-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(table_lines(result)))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
