"""The fault suite: nothing accepted is lost and no attempt runs twice, while every service is
killed -9 in turn, RabbitMQ restarts and a runner dies for good.

FREIGHT_FAULT_SEED replays a run; FREIGHT_FAULTS_BROKER=cut takes the broker away through a proxy
instead of restarting the real one (for machines where others share that RabbitMQ).
"""

from __future__ import annotations

import os
import random
import sys
import threading
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from shared.config import Settings
from tests.e2e.conftest import Cluster, free_port, running_cluster
from tests.faults.driver import FaultDriver
from tests.proxy import CuttableProxy
from tests.waiting import wait_until

JOBS = 60
SUBMIT_SPACING = 0.5  # seconds between submissions, on average
FAULT_SPACING = 4.0  # seconds between faults, on average


def services_with_spares(cluster: Cluster) -> None:
    """An active scheduler and a standby, two runners, and the rest once each."""
    cluster.start("api")
    cluster.start("scheduler")
    cluster.start("scheduler", name="scheduler-standby")
    for name in ("runner-a", "runner-b"):
        cluster.start("runner", name=name, runner_id=f"{cluster.settings.namespace}-{name}")
    if Path("services/filestore/main.py").exists():
        cluster.start("filestore")


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("FREIGHT_FAULT_SEED") or random.randrange(1_000_000))
    print(f"fault suite seed: {value} (replay with FREIGHT_FAULT_SEED={value})")
    return value


def through_proxy(settings: Settings, proxy: CuttableProxy) -> Settings:
    real = urlsplit(settings.amqp_url)
    netloc = f"{real.username}:{real.password}@127.0.0.1:{proxy.port}"
    return replace(
        settings,
        amqp_url=urlunsplit(real._replace(netloc=netloc)),
        runner_slots=3,
        runner_deadline=6.0,
        heartbeat_interval=1.0,
        stop_grace=1.0,
        publish_timeout=3.0,
    )


@pytest.mark.timeout(600)  # a minute or two of load and faults, then the checks
def test_nothing_accepted_is_lost_and_no_attempt_runs_twice(settings, tmp_path, seed):
    cluster_settings = replace(settings, api_bind=f"127.0.0.1:{free_port()}")
    real = urlsplit(cluster_settings.amqp_url)
    proxy = CuttableProxy(real.hostname or "127.0.0.1", real.port or 5672)
    settings = through_proxy(cluster_settings, proxy)
    broker = os.environ.get("FREIGHT_FAULTS_BROKER", "restart")
    try:
        with running_cluster(settings, tmp_path / "logs", start=services_with_spares) as cluster:
            driver = FaultDriver(cluster, proxy, seed, broker)
            driver.watch_container_starts(settings.namespace)
            load = threading.Thread(target=driver.submit_jobs, args=(JOBS, SUBMIT_SPACING))
            load.start()
            driver.inject_faults(FAULT_SPACING)
            load.join(timeout=300)

            driver.report.final = wait_until(
                lambda: _all_terminal(driver), timeout=180, what="every job to end"
            )
            wait_until(
                lambda: (
                    driver.collect_responses(cluster_settings.amqp_url, settings.response_queue)
                    or driver.report.responses >= set(driver.report.final)
                ),
                timeout=60,
                what="a job_response for every job",
            )
            driver.stop_watching()
            driver.report.dead_services = [
                name for name, process in cluster.processes.items() if process.poll() is not None
            ]
            if not requests.get(f"{cluster.url}/healthz", timeout=5).ok:
                driver.report.dead_services.append("api (not answering)")

            sys.stderr.write(driver.report.table() + "\n")
            failed = [name for name, ok, _ in driver.report.checks() if not ok]
            assert not failed, driver.report.table()
    finally:
        proxy.close()


def _all_terminal(driver: FaultDriver) -> dict | None:
    try:
        jobs = driver.all_jobs()
    except requests.RequestException:
        return None
    accepted = {s.job_id for s in driver.report.accepted}
    done = all(j["status"] in ("COMPLETE", "FAILED") for j in jobs.values())
    return jobs if done and accepted <= set(jobs) else None
