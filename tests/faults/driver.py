"""The fault driver: jobs keep flowing while services are killed -9 in turn, RabbitMQ restarts
once, the scheduler's database stalls, poison lands in the log and a runner dies for good; then
the guarantees are checked and printed as a table (tests/faults/report.py).

Everything random comes from one seed, so a failing run can be replayed.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from typing import Any

import docker
import pika
import requests
import sqlalchemy as sa

from tests.e2e.conftest import Cluster
from tests.faults.report import CANCELLED, FAILS, SUCCEEDS, Report, Submitted
from tests.faults.stream import append_raw, poison_events, read_stream
from tests.proxy import CuttableProxy
from tests.waiting import poll, wait_until

# How long a request is retried through the faults (a restart, an outage) before the run fails.
RETRY_FOR = 120.0
# How long the scheduler's tables stay locked: past its runner deadline.
DATABASE_STALL = 10.0
IDEMPOTENCY_HEADER = "Idempotency-Key"


class FaultDriver:
    def __init__(
        self,
        cluster: Cluster,
        proxy: CuttableProxy,
        seed: int,
        broker: str,
        *,
        amqp_url: str,
        scheduler_database: str,
    ):
        self.cluster = cluster
        self.proxy = proxy
        self.random = random.Random(seed)
        self.broker = broker  # "restart": the real RabbitMQ; "cut": only the proxy
        self.amqp_url = amqp_url  # the real broker, not through the proxy
        self.scheduler_database = scheduler_database
        self.report = Report(seed, cluster.settings.runner_deadline)
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- load ------------------------------------------------------------------------------

    def submit_jobs(self, count: int, spacing: float) -> None:
        """Two clients side by side, so that every outage catches both mid-submission: one
        sends an Idempotency-Key and retries with it, as the SDK does; the other retries
        blindly, as a naive client would. Each command starts with its own marker, so that
        the jobs one submission made can be counted."""
        clients = [
            threading.Thread(
                target=self._submit_as_client,
                args=(keyed, range(int(not keyed), count, 2), 2 * spacing, self.random.random()),
            )
            for keyed in (True, False)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join()

    def _submit_as_client(self, keyed: bool, numbers: range, spacing: float, seed: float) -> None:
        rng = random.Random(seed)
        for n in numbers:
            kind = rng.choices([SUCCEEDS, FAILS, CANCELLED], weights=[6, 2, 2])[0]
            marker = f"fault-{n}-{'key' if keyed else 'bare'}"
            pause = f"sleep {rng.choice(['0.2', '0.5', '1', '2'])}"
            body = {
                SUCCEEDS: f"{pause}; echo ok {n}",
                FAILS: f"{pause}; exit 3",
                CANCELLED: "sleep 30",
            }[kind]
            submitted = self._submit_until_accepted(f": {marker}; {body}", kind, marker, keyed)
            with self._lock:
                self.report.accepted.append(submitted)
            if kind == CANCELLED:
                delay = rng.uniform(0, 3)
                threading.Timer(delay, self._cancel, args=(submitted,)).start()
            time.sleep(spacing * rng.uniform(0.5, 1.5))

    def _submit_until_accepted(
        self, command: str, kind: str, marker: str, keyed: bool
    ) -> Submitted:
        # While the API restarts or the broker is away, a user would try again: so does this.
        headers = {IDEMPOTENCY_HEADER: marker} if keyed else {}
        tries = 0

        def submit() -> requests.Response | None:
            nonlocal tries
            tries += 1
            return self._request(
                "post",
                "/jobs",
                {201},
                json={"command": command, "max_attempts": 3},
                headers=headers,
            )

        response = wait_until(submit, timeout=RETRY_FOR, what="the API to accept a job")
        return Submitted(
            str(response.json()["job_id"]),
            kind,
            marker,
            keyed,
            tries=tries,
            replayed=response.headers.get("Idempotent-Replayed") == "true",
        )

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
        # The broker goes while jobs are still being submitted; poison while some run.
        steps = [
            "api",
            "poison",
            "scheduler",
            "broker",
            "runner-a",
            "database-stall",
            "filestore",
            "runner-b-for-good",
        ]
        for step in steps:
            time.sleep(spacing * self.random.uniform(0.5, 1.5))
            if step == "broker":
                self._broker_outage()
            elif step == "poison":
                self._append_poison()
            elif step == "database-stall":
                self._stall_scheduler_database()
            elif step == "runner-b-for-good":
                busy = self._wait_for_work_on("runner-b")
                self.cluster.kill("runner-b")
                self.report.faults.append(f"runner-b killed for good ({busy} jobs on it)")
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

    def _stall_scheduler_database(self) -> None:
        """Every scheduler table locked by another session, as a stuck migration or a vacuum
        would: the scheduler waits on its database for longer than its runner deadline. The
        tables are locked in the order the scheduler's own transactions write them (runners,
        jobs, then the offset last): in any other, a batch half written deadlocks the stall."""
        engine = sa.create_engine(self.scheduler_database)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SET lock_timeout = '30s'"))
                connection.execute(
                    sa.text(
                        "LOCK TABLE scheduler_runners, scheduler_jobs, scheduler_offsets "
                        "IN ACCESS EXCLUSIVE MODE"
                    )
                )
                time.sleep(DATABASE_STALL)  # the fault is its duration
                connection.rollback()
        finally:
            engine.dispose()
        self.report.faults.append(f"scheduler's database locked {DATABASE_STALL:.0f}s")

    def _append_poison(self) -> None:
        running = self._a_running_job()
        poison = poison_events(running, self.cluster.settings.default_image)
        append_raw(self.amqp_url, self.cluster.settings.events_stream, [p.body for p in poison])
        self.report.poison = poison
        self.report.faults.append(f"{len(poison)} poison events appended")

    def _wait_for_work_on(self, name: str, timeout: float = 15.0) -> int:
        """How many jobs `name` holds, once it holds one (or after `timeout`): a runner that
        dies busy is what makes its jobs end "runner lost" and go back to the queue."""
        runner = self.cluster.started_as[name][1]["runner_id"]

        def busy() -> int:
            return sum(
                j["runner"] == runner and j["status"] in ("PENDING", "RUNNING")
                for j in self._jobs_now()
            )

        return poll(busy, timeout) or 0

    def _a_running_job(self) -> dict[str, Any] | None:
        """One of the run's jobs that is RUNNING now, if the API can say so."""

        def running() -> dict[str, Any] | None:
            return next(
                (j for j in self._jobs_now() if j["status"] == "RUNNING" and j["runner"]), None
            )

        return poll(running, 10)

    def _jobs_now(self) -> list[dict[str, Any]]:
        """The run's jobs, or none while the API cannot answer (it may be down: a fault)."""
        try:
            return list(self.all_jobs().values())
        except (requests.RequestException, ValueError):
            return []

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

    def read_the_log(self, skews: dict[str, float]) -> None:
        settings = self.cluster.settings
        events = read_stream(self.amqp_url, settings.events_stream)
        heartbeats = read_stream(self.amqp_url, f"{settings.namespace}.heartbeats")
        self.report.read_log(events, heartbeats, skews)

    def read_projections(self, databases: dict[str, tuple[str, str]]) -> None:
        """Where each live projection stands in the log, and how much of the poison it set
        aside. `databases`: name -> (table prefix, database URL)."""
        poison = [p.body for p in self.report.poison]
        for name, (prefix, url) in databases.items():
            engine = sa.create_engine(url)
            try:
                with engine.connect() as connection:
                    position = connection.execute(
                        sa.text(f"SELECT max(position) FROM {prefix}_offsets")
                    ).scalar()
                    bodies = connection.execute(
                        sa.text(f"SELECT body FROM {prefix}_dead_letters")
                    ).scalars()
                    kept = sum(1 for body in bodies if bytes(body) in poison)
            finally:
                engine.dispose()
            self.report.positions[name] = position
            self.report.dead_lettered[name] = kept

    def all_jobs(self) -> dict[str, dict[str, Any]]:
        jobs: dict[str, dict[str, Any]] = {}
        url: str | None = "/jobs?status=all&limit=1000"
        while url:
            page = requests.get(f"{self.cluster.url}{url}", timeout=10).json()
            jobs.update({j["job_id"]: j for j in page["results"]})
            url = page["next"]
        return jobs
