"""The fault suite: nothing accepted is lost, no attempt runs twice and nothing is stuck, while
every service is killed -9 in turn, RabbitMQ restarts during submissions, the scheduler's
database stalls past the runner deadline, poison lands in the log, one runner's clock is a
minute ahead and a runner dies for good. Retried submissions make no duplicate job when they
carry an Idempotency-Key (those without one are counted, for information).

FREIGHT_FAULT_SEED replays a run; FREIGHT_FAULTS_BROKER=cut takes the broker away through a proxy
instead of restarting the real one (for machines where others share that RabbitMQ).
"""

from __future__ import annotations

import glob
import os
import random
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from freight_server.shared.config import Settings
from tests.conftest import _fresh_postgres_database
from tests.e2e.conftest import Cluster, free_port, running_cluster
from tests.faults.driver import FaultDriver
from tests.proxy import CuttableProxy
from tests.waiting import poll

JOBS = 50
SUBMIT_SPACING = 0.8  # seconds between submissions, on average: still coming as runner-b dies
FAULT_SPACING = 3.0  # seconds between faults, on average
SKEWED_RUNNER, SKEW = "runner-b", 60.0  # this runner's clock is a minute ahead
# The multi-threaded build: the services run threads.
LIBFAKETIME = "/usr/lib/*/faketime/libfaketimeMT.so.1"


def services_with_spares(cluster: Cluster, scheduler_database: str, skew: dict[str, str]) -> None:
    """An active scheduler and a standby sharing a PostgreSQL database, two runners (one with
    its clock off), and the rest once each."""
    cluster.start("api")
    for name in ("scheduler", "scheduler-standby"):
        cluster.start("scheduler", name=name, scheduler_database_url=scheduler_database)
    cluster.extra_env[SKEWED_RUNNER] = skew
    for name in ("runner-a", "runner-b"):
        cluster.start("runner", name=name, runner_id=runner_id(cluster.settings, name))
    if Path("freight_server/services/filestore/main.py").exists():
        cluster.start("filestore")


def runner_id(settings: Settings, name: str) -> str:
    return f"{settings.namespace}-{name}"


def clock_ahead(seconds: float) -> dict[str, str]:
    """The environment that sets one process's wall clock ahead (libfaketime); its monotonic
    clock stays true. Empty where libfaketime is not installed."""
    found = sorted(glob.glob(LIBFAKETIME))
    if not found:
        return {}
    shim = str(Path(__file__).parent / "skewed_clock")  # its time.sleep, see there
    return {
        "LD_PRELOAD": found[0],
        "FAKETIME": f"+{seconds:.0f}s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [shim, os.environ.get("PYTHONPATH")])),
    }


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("FREIGHT_FAULT_SEED") or random.randrange(1_000_000))
    print(f"fault suite seed: {value} (replay with FREIGHT_FAULT_SEED={value})")
    return value


@pytest.fixture
def scheduler_database(postgres_server_url: str) -> Iterator[str]:
    yield from _fresh_postgres_database(postgres_server_url)


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
def test_nothing_accepted_is_lost_and_no_attempt_runs_twice(
    settings, tmp_path, seed, scheduler_database
):
    cluster_settings = replace(settings, api_bind=f"127.0.0.1:{free_port()}")
    real = urlsplit(cluster_settings.amqp_url)
    proxy = CuttableProxy(real.hostname or "127.0.0.1", real.port or 5672)
    settings = through_proxy(cluster_settings, proxy)
    broker = os.environ.get("FREIGHT_FAULTS_BROKER", "restart")
    skew = clock_ahead(SKEW)
    try:
        with running_cluster(
            settings,
            tmp_path / "logs",
            start=lambda cluster: services_with_spares(cluster, scheduler_database, skew),
        ) as cluster:
            driver = FaultDriver(
                cluster,
                proxy,
                seed,
                broker,
                amqp_url=cluster_settings.amqp_url,
                scheduler_database=scheduler_database,
            )
            report = driver.report
            if skew:
                report.skewed_runner = runner_id(settings, SKEWED_RUNNER)
            driver.watch_container_starts(settings.namespace)
            load = threading.Thread(target=driver.submit_jobs, args=(JOBS, SUBMIT_SPACING))
            load.start()
            driver.inject_faults(FAULT_SPACING)
            load.join(timeout=300)

            # No wait here fails the run: what did not settle in time shows in the table.
            report.final = _settled(driver, timeout=180)
            poll(
                lambda: (
                    driver.collect_responses(cluster_settings.amqp_url, settings.response_queue)
                    or report.responses >= set(report.final)
                ),
                timeout=60,
            )
            driver.stop_watching()
            report.dead_services = [
                name for name, process in cluster.processes.items() if process.poll() is not None
            ]
            if not _answers(cluster.url):
                report.dead_services.append("api (not answering)")
            live = _live_projections(cluster, scheduler_database)
        # Now that every service has stopped, the streams are still and can be read to the end.
        driver.read_the_log({report.skewed_runner: SKEW} if report.skewed_runner else {})
        driver.read_projections(live)
        sys.stderr.write(report.table() + "\n")
        assert not report.failed(), report.table()
    finally:
        proxy.close()


def _live_projections(cluster: Cluster, scheduler_database: str) -> dict[str, tuple[str, str]]:
    """The projections still running at the end, by name: (table prefix, database URL)."""
    settings = cluster.settings
    databases = {
        "api": ("api", settings.database_url_for("api")),
        "scheduler": ("scheduler", scheduler_database),
        "runner-a": (
            "runner",
            replace(settings, runner_id=runner_id(settings, "runner-a")).database_url_for("runner"),
        ),
    }
    if "filestore" in cluster.processes:
        databases["filestore"] = ("filestore", settings.database_url_for("filestore"))
    return databases


def _settled(driver: FaultDriver, timeout: float) -> dict[str, dict[str, Any]]:
    """Every job in the log once all have ended, or as they stand at `timeout`."""
    accepted = {s.job_id for s in driver.report.accepted}
    latest: dict[str, dict[str, Any]] = {}

    def all_ended() -> bool:
        nonlocal latest
        try:
            latest = driver.all_jobs()
        except (requests.RequestException, ValueError):
            return False
        ended = all(j["status"] in ("COMPLETE", "FAILED") for j in latest.values())
        return ended and accepted <= set(latest)

    poll(all_ended, timeout)
    return latest


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=5).ok
    except requests.RequestException:
        return False
