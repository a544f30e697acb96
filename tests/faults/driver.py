"""The fault driver: jobs keep flowing while services are killed -9 in turn, RabbitMQ restarts
once and a runner dies for good; then the guarantees are checked and printed as a table.

Everything random comes from one seed, so a failing run can be replayed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import docker
import pika
import requests

from tests.e2e.conftest import Cluster
from tests.proxy import CuttableProxy
from tests.waiting import wait_until

# How long a request is retried through the faults (a restart, an outage) before the run fails.
RETRY_FOR = 120.0

SUCCEEDS, FAILS, CANCELLED = "succeeds", "fails", "cancelled"


@dataclass
class Submitted:
    job_id: str
    kind: str
    cancel_answer: int | None = None  # the DELETE's status, for cancelled jobs


@dataclass
class Report:
    seed: int
    accepted: list[Submitted] = field(default_factory=list)
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    starts: Counter[tuple[str, str]] = field(default_factory=Counter)
    responses: set[str] = field(default_factory=set)
    faults: list[str] = field(default_factory=list)
    dead_services: list[str] = field(default_factory=list)

    def checks(self) -> list[tuple[str, bool, str]]:
        terminal = [j for j in self.final.values() if j["status"] in ("COMPLETE", "FAILED")]
        wrong = [s.job_id for s in self.accepted if not self._as_expected(s)]
        repeated = {k: n for k, n in self.starts.items() if n > 1}
        unannounced = [j for j in self.final if j not in self.responses]
        return [
            (
                "jobs accepted = jobs terminal",
                len(terminal) == len(self.final) >= len(self.accepted),
                f"{len(self.accepted)} accepted, {len(self.final)} in the log, "
                f"{len(terminal)} terminal",
            ),
            (
                "COMPLETE exactly for the commands that succeed",
                not wrong,
                f"{len(wrong)} wrong: {[self._describe(job_id) for job_id in wrong[:3]]}",
            ),
            (
                "containers started per attempt <= 1",
                not repeated,
                f"{sum(self.starts.values())} starts, repeated: {repeated}",
            ),
            (
                "a job_response for every job",
                not unannounced,
                f"{len(self.responses)} announced, missing {unannounced[:3]}",
            ),
            (
                "every service alive at the end",
                not self.dead_services,
                f"dead: {self.dead_services}",
            ),
        ]

    def _describe(self, job_id: str) -> str:
        submitted = next(s for s in self.accepted if s.job_id == job_id)
        job = self.final.get(job_id, {})
        return (
            f"{job_id} {submitted.kind} (cancel {submitted.cancel_answer}) -> "
            f"{job.get('status')} {job.get('reason')!r} attempt {job.get('attempt')}"
        )

    def _as_expected(self, submitted: Submitted) -> bool:
        job = self.final.get(submitted.job_id)
        if job is None:
            return False
        if submitted.kind == SUCCEEDS:
            return job["status"] == "COMPLETE"
        if submitted.kind == FAILS:
            return job["status"] == "FAILED" and job["exit_code"] == 3
        if submitted.cancel_answer == 202:
            return job["status"] == "FAILED" and job["reason"] == "cancelled"
        return job["status"] == "COMPLETE"  # it ended before the cancel (409)

    def table(self) -> str:
        lines = [f"fault suite, seed {self.seed}", "faults: " + "; ".join(self.faults), ""]
        for name, ok, detail in self.checks():
            lines.append(f"{'PASS' if ok else 'FAIL'}  {name:<48} {detail}")
        return "\n".join(lines)


class FaultDriver:
    def __init__(self, cluster: Cluster, proxy: CuttableProxy, seed: int, broker: str):
        self.cluster = cluster
        self.proxy = proxy
        self.random = random.Random(seed)
        self.broker = broker  # "restart": the real RabbitMQ; "cut": only the proxy
        self.report = Report(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- load ------------------------------------------------------------------------------

    def submit_jobs(self, count: int, spacing: float) -> None:
        rng = random.Random(self.random.random())
        for n in range(count):
            kind = rng.choices([SUCCEEDS, FAILS, CANCELLED], weights=[6, 2, 2])[0]
            pause = f"sleep {rng.choice(['0.2', '0.5', '1', '2'])}"
            command = {
                SUCCEEDS: f"{pause}; echo ok {n}",
                FAILS: f"{pause}; exit 3",
                CANCELLED: "sleep 30",
            }[kind]
            job_id = self._submit_until_accepted(command)
            submitted = Submitted(job_id, kind)
            with self._lock:
                self.report.accepted.append(submitted)
            if kind == CANCELLED:
                delay = rng.uniform(0, 3)
                threading.Timer(delay, self._cancel, args=(submitted,)).start()
            time.sleep(spacing * rng.uniform(0.5, 1.5))

    def _submit_until_accepted(self, command: str) -> str:
        # While the API restarts or the broker is away, a user would try again: so does this.
        response = wait_until(
            lambda: self._request(
                "post", "/jobs", {201}, json={"command": command, "max_attempts": 3}
            ),
            timeout=RETRY_FOR,
            what="the API to accept a job",
        )
        return str(response.json()["job_id"])

    def _cancel(self, submitted: Submitted) -> None:
        response = wait_until(
            lambda: self._request("delete", f"/jobs/{submitted.job_id}", {202, 409}),
            timeout=RETRY_FOR,
            what=f"the API to answer the cancel of {submitted.job_id}",
        )
        submitted.cancel_answer = response.status_code

    def _request(
        self, method: str, path: str, wanted: set[int], **kwargs: Any
    ) -> requests.Response | None:
        """The answer, if it is one of `wanted`; None while the API cannot give one."""
        try:
            response = requests.request(method, f"{self.cluster.url}{path}", timeout=10, **kwargs)
        except requests.RequestException:
            return None
        return response if response.status_code in wanted else None

    # -- faults ----------------------------------------------------------------------------

    def inject_faults(self, spacing: float) -> None:
        steps = ["api", "scheduler", "runner-a", "broker", "filestore", "runner-b-for-good"]
        for step in steps:
            time.sleep(spacing * self.random.uniform(0.5, 1.5))
            if step == "broker":
                self._broker_outage()
            elif step == "runner-b-for-good":
                self.cluster.kill("runner-b")
                self.report.faults.append("runner-b killed for good")
            elif step in self.cluster.processes:
                self._kill_and_restart(step)

    def _kill_and_restart(self, name: str) -> None:
        process = self.cluster.processes[name]
        args = process.args
        self.cluster.kill(name, signal.SIGKILL)
        time.sleep(self.random.uniform(0.1, 1.0))
        self.cluster.restart(name)
        self.report.faults.append(f"kill -9 {name} ({args[-1]})")

    def _broker_outage(self) -> None:
        if self.broker == "restart":
            subprocess.run(["rabbitmqctl", "-q", "stop_app"], check=True, timeout=120)
            subprocess.run(["rabbitmqctl", "-q", "start_app"], check=True, timeout=120)
            subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, timeout=120)
            self.report.faults.append("RabbitMQ restarted")
        else:
            self.proxy.cut()
            time.sleep(self.random.uniform(2, 4))
            self.proxy.restore()
            self.report.faults.append("RabbitMQ cut off (proxy)")

    # -- observation -----------------------------------------------------------------------

    def watch_container_starts(self, namespace: str) -> threading.Thread:
        client = docker.from_env()
        stream = client.events(
            decode=True,
            filters={
                "type": "container",
                "event": "start",
                "label": f"freight.namespace={namespace}",
            },
        )

        def record() -> None:
            for event in stream:
                labels = event.get("Actor", {}).get("Attributes", {})
                key = (labels.get("freight.job_id", "?"), labels.get("freight.attempt", "?"))
                with self._lock:
                    self.report.starts[key] += 1

        self._events_stream = stream
        thread = threading.Thread(target=record, daemon=True)
        thread.start()
        return thread

    def stop_watching(self) -> None:
        self._events_stream.close()

    def collect_responses(self, amqp_url: str, queue: str) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            self.report.responses.add(json.loads(body)["job_id"])
        connection.close()

    def all_jobs(self) -> dict[str, dict[str, Any]]:
        jobs: dict[str, dict[str, Any]] = {}
        url: str | None = "/jobs?status=all&limit=1000"
        while url:
            page = requests.get(f"{self.cluster.url}{url}", timeout=10).json()
            jobs.update({j["job_id"]: j for j in page["results"]})
            url = page["next"]
        return jobs
