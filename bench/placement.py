"""Placement time per job against queue depth: does placing a job get slower as the queue grows?

The log is seeded with `jobs` JobSubmitted events before the scheduler starts (the scheduler
alone: no API, no runner, no Docker). This process then plays a runner with `slots` slots: it
sends heartbeats, reads the log, and for each JobAssigned to it publishes JobStarted and
JobFinished at once (an instant job), so each placement waits only for a slot to free up.

Measuring starts once the scheduler has told every queued job why it waits (a bounded trickle
of JobWaiting a pass, which the seeding causes, not placement). A sample is one placement: the
time from the JobFinished that freed its slot (confirmed by RabbitMQ) to its JobAssigned read
back from the log, with the queue depth at that moment.
Draining 10k jobs through a few slots would take long, so the queue steps down instead: after
`SAMPLES_PER_STEP` placements at one depth, the jobs at the tail of the queue are cancelled
(cheap events for the scheduler to fold) down to the next step. The curve is reported in
buckets of queue depth with p50/p99 each; flat means the deepest bucket's median is about the
shallowest's (`flatness` ≈ 1.0).
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pika

from bench.cluster import Cluster, percentile, progress
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.events import Event, EventFactory, EventType, decode
from freight_server.shared.jobs import Outcome

SEED_BATCH = 500  # events a confirm: seeding is not what is measured
STEPS = 10  # queue depths measured: jobs, jobs * 9/10, ..., jobs / 10
SAMPLES_PER_STEP = 60  # placements measured at each depth
WARMUP_PER_STEP = 8  # placements after a step down that are not measured (cancels settling)
SETTLE_QUIET = 3.0  # seconds without a JobWaiting: the scheduler told every reason
SETTLE_TIMEOUT = 600
HEARTBEAT_EVERY = 1.0  # seconds; the scheduler's runner deadline is far longer
RUNNER = "bench-runner"


class SchedulerOnly(Cluster):
    """The scheduler alone: it has no /readyz, so it is ready once it places the first job."""

    def _ready(self) -> bool:
        return all(p.poll() is None for p in self.processes)


def run(root: Path, jobs: int, slots: int) -> dict[str, Any]:
    cluster = SchedulerOnly(root, ("scheduler",), ready_timeout=60)
    ns = cluster.namespace
    topology = Topology(ns, f"{ns}.events", f"{ns}.job_response", f"{ns}.job_response")
    publisher = Publisher(cluster.amqp_url, topology, "bench-runner", timeout=60)
    try:
        progress(f"queueing {jobs} jobs")
        ids = _seed(publisher, jobs)
        with cluster:
            runner = FakeRunner(cluster.amqp_url, topology, publisher, slots, ids)
            try:
                samples = runner.measure()
                reasons = runner.reasons_told
            finally:
                runner.close()
    finally:
        publisher.close()
        if not cluster.processes:  # it never started: __exit__ did not delete the stream
            cluster._delete_topology()
    buckets = _buckets(samples, jobs)
    medians = [b["p50_ms"] for b in buckets if b["n"]]
    return {
        "jobs": jobs,
        "slots": slots,
        "samples": len(samples),
        "reasons_told_before": reasons,  # JobWaiting the scheduler sent before measuring
        "buckets": buckets,
        # The deepest bucket's median over the shallowest's: 1.0 is flat.
        "flatness": round(medians[0] / medians[-1], 2) if len(medians) > 1 else None,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """One line a depth bucket, then the ratio of the deepest median to the shallowest."""
    lines = [
        (
            f"4. place at depth {b['depth']}",
            f"p50 {b['p50_ms']:.1f} ms",
            f"p99 {b['p99_ms']:.1f} ms",
            f"n {b['n']}",
        )
        for b in result["buckets"]
        if b["n"]
    ]
    flatness = result["flatness"]
    lines.append(
        (
            f"4. placement, {result['jobs']} queued / {result['slots']} slots",
            "deepest p50 / shallowest p50",
            "target ≈ 1.0",
            "n/a" if flatness is None else f"{flatness:.2f}×",
        )
    )
    return lines


def _seed(publisher: Publisher, jobs: int) -> list[str]:
    """`jobs` submissions, oldest first; their ids in queue order."""
    api = EventFactory("api")
    ids = [str(uuid.uuid4()) for _ in range(jobs)]
    for start in range(0, jobs, SEED_BATCH):
        publisher.append(
            *[
                api(
                    EventType.JOB_SUBMITTED,
                    job_id,
                    command="true",
                    image="freight/busybox:local",
                    gpus=None,
                    env={},
                    timeout=None,
                    owner="bench",
                )
                for job_id in ids[start : start + SEED_BATCH]
            ]
        )
    return ids


class FakeRunner:
    """A runner that finishes each job the moment it is assigned, timing each placement."""

    def __init__(
        self,
        amqp_url: str,
        topology: Topology,
        publisher: Publisher,
        slots: int,
        ids: list[str],
    ):
        self._publisher = publisher
        self._slots = slots
        self._queued = list(ids)  # still queued, in queue order (the tail is cancelled)
        self._waiting = set(ids)
        self._new_event = EventFactory(RUNNER)
        self._next_heartbeat = 0.0
        self._connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self._channel = self._connection.channel()
        topology.declare(self._channel)
        self._channel.basic_qos(prefetch_count=1000)
        # Only what follows the seed: the scheduler's own decisions.
        self._channel.basic_consume(
            topology.events_stream, self._on_message, arguments={"x-stream-offset": "next"}
        )
        self._assigned: list[tuple[float, str, dict[str, Any]]] = []
        # JobWaiting read so far, and when the last was; at least REASON_DELAY from the seed.
        self._reasons, self._last_reason = 0, time.monotonic()
        self.reasons_told = 0  # before measuring

    def close(self) -> None:
        if self._connection.is_open:
            self._connection.close()

    def measure(self) -> list[tuple[int, float]]:
        """(queue depth, seconds) for each measured placement."""
        total = len(self._queued)
        targets = [total - total * step // STEPS for step in range(STEPS)]
        # A step's placements stay within its bucket, however few jobs there are.
        warmup = min(WARMUP_PER_STEP, total // STEPS // 4)
        measured = max(1, min(SAMPLES_PER_STEP, total // STEPS // 2))
        samples: list[tuple[int, float]] = []
        self._heartbeat()
        self._await_assignments(self._slots, timeout=600)  # the scheduler replayed the seed
        self._settle()
        for target in targets:
            progress(f"placing at a queue of {target}")
            self._cancel_down_to(target)
            for n in range(warmup + measured):
                depth = len(self._queued)
                if depth == 0:
                    break
                freed = self._finish_one()
                assigned_at = self._await_assignments(1, timeout=120)
                if n >= warmup:
                    samples.append((depth, assigned_at - freed))
        return samples

    def _finish_one(self) -> float:
        """Finish the oldest running job; when RabbitMQ confirmed it ended."""
        _, job_id, data = self._assigned.pop(0)
        attempt, new = data["attempt"], self._new_event
        self._publisher.append(
            new(EventType.JOB_STARTED, job_id, runner=RUNNER, attempt=attempt),
            new(
                EventType.JOB_FINISHED,
                job_id,
                runner=RUNNER,
                attempt=attempt,
                outcome=Outcome.SUCCEEDED.value,
                exit_code=0,
                reason=None,
            ),
        )
        return time.monotonic()

    def _await_assignments(self, count: int, timeout: float) -> float:
        """Wait for `count` more JobAssigned; when the last was read."""
        wanted = len(self._assigned) + count
        deadline = time.monotonic() + timeout
        while len(self._assigned) < wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{wanted - len(self._assigned)} assignments never came")
            self._heartbeat()
            self._connection.process_data_events(time_limit=0.05)
        return self._assigned[-1][0]

    def _settle(self) -> None:
        """Wait until the scheduler has told each queued job why it waits (a bounded trickle
        a pass, REASON_DELAY after submission): a cost of the seeding, not of placement."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() - self._last_reason < SETTLE_QUIET:
            if time.monotonic() > deadline:
                raise TimeoutError("the scheduler never stopped telling reasons")
            self._heartbeat()
            self._connection.process_data_events(time_limit=0.05)
        self.reasons_told = self._reasons

    def _on_message(self, channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        read = time.monotonic()
        channel.basic_ack(method.delivery_tag)
        event = decode(body)
        if event.type == EventType.JOB_WAITING:
            self._last_reason, self._reasons = read, self._reasons + 1
        if event.type != EventType.JOB_ASSIGNED or event.data.get("runner") != RUNNER:
            return
        job_id = str(event.job_id)
        if job_id in self._waiting:
            self._waiting.discard(job_id)
            self._queued.remove(job_id)
            self._assigned.append((read, job_id, dict(event.data)))

    def _cancel_down_to(self, depth: int) -> None:
        """Cancel the youngest queued jobs until `depth` are left."""
        cancelled = self._queued[depth:]
        del self._queued[depth:]
        self._waiting.difference_update(cancelled)
        api = EventFactory("api")
        for start in range(0, len(cancelled), SEED_BATCH):
            self._publisher.append(
                *[
                    api(EventType.JOB_CANCEL_REQUESTED, job_id)
                    for job_id in cancelled[start : start + SEED_BATCH]
                ]
            )

    def _heartbeat(self) -> None:
        if time.monotonic() < self._next_heartbeat:
            return
        running = [f"{job_id}/{data['attempt']}" for _, job_id, data in self._assigned]
        heartbeat: Event = self._new_event(
            EventType.RUNNER_HEARTBEAT,
            None,
            runner=RUNNER,
            running=running,
            slots=self._slots,
            gpus=[],
            cpus=64.0,
            memory_mb=1 << 20,
            free={"slots": self._slots - len(running), "gpus": [], "cpus": 64.0},
        )
        self._publisher.send_heartbeat(heartbeat)
        self._next_heartbeat = time.monotonic() + HEARTBEAT_EVERY


def _buckets(samples: list[tuple[int, float]], jobs: int) -> list[dict[str, Any]]:
    """Samples grouped by queue depth, deepest first: (jobs*9/10, jobs], ..., (0, jobs/10]."""
    out = []
    for step in range(STEPS):
        high = jobs - jobs * step // STEPS
        low = jobs - jobs * (step + 1) // STEPS
        seconds = [s for depth, s in samples if low < depth <= high]
        out.append(
            {
                "depth": f"{high}..{low + 1}",
                "n": len(seconds),
                "p50_ms": round(statistics.median(seconds) * 1000, 2) if seconds else 0.0,
                "p99_ms": round(percentile(seconds, 99) * 1000, 2) if seconds else 0.0,
            }
        )
    return out


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="freight-bench-") as tmp:
        result = run(Path(tmp), args.jobs, args.slots)
    print(json.dumps(result, indent=2))
    for row in rows(result):
        print("  ".join(row))
