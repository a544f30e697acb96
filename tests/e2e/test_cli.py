"""The `freight` command as a user runs it: a subprocess, FREIGHT_URL pointing at the services."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from freight.commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_EXIT_CODE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from tests.e2e.conftest import Cluster, free_port


def freight(*args: str, env: dict[str, str], timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "freight.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Cli:
    """Runs `freight` pointed at the test's services (their namespaced job_response too)."""

    def __init__(self, cluster):
        self.env = {
            "FREIGHT_URL": cluster.url,
            "FREIGHT_AMQP_URL": cluster.settings.amqp_url,
            "FREIGHT_RESPONSE_EXCHANGE": cluster.settings.response_exchange,
        }

    def __call__(self, *args: str, timeout: float = 60):
        return freight(*args, env=self.env, timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "freight.cli", *args],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="module")
def cluster(shared_cluster: Cluster) -> Cluster:
    """Each check here makes its own jobs: one cluster serves the module."""
    return shared_cluster


@pytest.fixture
def cli(cluster):
    return Cli(cluster)


def test_submit_two_files_wait_logs_and_get_a_file(cli, tmp_path):
    (tmp_path / "a.txt").write_text("alpha\n")
    blob = os.urandom(300_000)
    (tmp_path / "b.bin").write_bytes(blob)
    submitted = cli(
        "submit",
        "--json",
        "--wait",
        "--file", f"{tmp_path / 'a.txt'}",
        "--file", f"{tmp_path / 'b.bin'}:/data/b.bin",
        "--env", "WHO=world",
        "--",
        'cat a.txt; echo "hello $WHO"; mkdir -p out; cp /data/b.bin out/copy.bin',
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] == "COMPLETE" and job["exit_code"] == 0

    logs = cli("logs", job["job_id"])
    assert logs.returncode == 0 and logs.stdout == "alpha\nhello world\n"
    listing = cli("files", "ls", "--json", job["job_id"], "/job/out")
    assert [e["name"] for e in json.loads(listing.stdout)] == ["copy.bin"]

    target = tmp_path / "downloaded.bin"
    got = cli("files", "get", "--json", job["job_id"], "/job/out/copy.bin", "-o", str(target))
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["size"] == len(blob)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(blob).digest()


def test_submit_wait_exits_with_the_jobs_exit_code_and_every_view_parses(cli):
    done = cli("submit", "--wait", "--", "echo hi; exit 7")
    assert done.returncode == 7
    job_id = done.stdout.strip()
    assert f"job {job_id} FAILED (exit code 7)" in done.stderr

    again = cli("wait", "--json", job_id)
    assert again.returncode == 7 and json.loads(again.stdout)["exit_code"] == 7
    status = json.loads(cli("status", "--json", job_id).stdout)
    assert status["job_id"] == job_id and status["reason"] == "exit code 7"
    events = json.loads(cli("--json", "events", job_id).stdout)
    assert events[0]["type"] == "JobSubmitted" and events[-1]["type"] == "JobFinished"
    listed = json.loads(cli("ls", "--all", "--json").stdout)
    assert job_id in [j["job_id"] for j in listed]
    human = cli("ls", "--status", "failed")
    assert human.returncode == 0 and job_id in human.stdout and "exit code 7" in human.stdout


def test_wait_for_a_running_job_then_cancel_it(cli):
    job_id = cli("submit", "--", "sleep", "300").stdout.strip()
    waiter = cli.start("wait", "--json", job_id)
    cancelled = cli("cancel", job_id)
    assert cancelled.returncode == 0 and job_id in cancelled.stdout
    out, err = waiter.communicate(timeout=30)
    job = json.loads(out)
    assert job["reason"] == "cancelled", err
    # Killed while running it has the signal's exit code (143); cancelled while queued, none.
    assert waiter.returncode == (job["exit_code"] or EXIT_NO_EXIT_CODE)

    refused = cli("cancel", job_id)
    assert refused.returncode == EXIT_FAILED
    assert refused.stderr.startswith(f"freight: job {job_id} already ended (FAILED)")


def test_an_unreachable_server_says_what_to_do(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    # Retrying a refused connection is tested in tests/unit/test_sdk_retry.py; not again here.
    result = freight("ls", env={"FREIGHT_URL": url, "FREIGHT_RETRIES": "0"})
    assert result.returncode == EXIT_UNREACHABLE
    assert f"cannot reach Freight at {url}: is `make up` running?" in result.stderr

    missing = freight("submit", "--file", str(tmp_path / "nope"), "--", "true", env={})
    assert missing.returncode == EXIT_USAGE and "no such file" in missing.stderr


def _tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_a_directory_goes_up_and_comes_back_down_whole(cli, tmp_path):
    source = tmp_path / "src"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "a.txt").write_text("alpha\n")
    (source / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (source / "sub" / "deeper" / "c d.txt").write_text("spaced\n")
    submitted = cli(
        "submit", "--wait", "--file", f"{source}:tree", "--", "cp -r tree out && ls -R out"
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    # By a prefix of its id, into a directory that exists: as `cp -r`, under its own name.
    (tmp_path / "down").mkdir()
    got = cli("files", "get", "-r", job_id[:8], "/job/out", "-o", str(tmp_path / "down"))
    assert got.returncode == 0, got.stderr
    assert "saved /job/out to" in got.stderr and "(3 files" in got.stderr
    assert _tree(tmp_path / "down" / "out") == _tree(source)


def test_ids_by_prefix_and_errors_by_freights_own_exit_codes(cli, tmp_path):
    job_id = cli("submit", "--wait", "--", "true").stdout.strip()
    shown = cli("status", "--json", job_id[:6])
    assert shown.returncode == 0 and json.loads(shown.stdout)["job_id"] == job_id

    unknown = cli("status", "0000ffff0000")  # looked for by the API, among every job of yours
    assert unknown.returncode == EXIT_FAILED and "no job of yours" in unknown.stderr
    not_an_id = cli("status", "0000zz")
    assert not_an_id.returncode == EXIT_FAILED and "ids are hexadecimal" in not_an_id.stderr
    short = cli("logs", job_id[:3])
    assert short.returncode == EXIT_USAGE and "at least 4 characters" in short.stderr
    bad = cli("ls", "--no-such-option")
    assert bad.returncode == EXIT_USAGE
    missing_dir = cli("files", "get", job_id, "/job/x", "-o", str(tmp_path / "no" / "x"))
    assert missing_dir.returncode == EXIT_USAGE
    assert missing_dir.stderr == f"freight: directory {tmp_path / 'no'} does not exist\n"
    assert cli("submit", "--wait", "--", "exit 127").returncode == 127


def test_ctrl_c_while_following_says_how_to_get_back(cli):
    follower = cli.start("submit", "--follow", "--", "echo started; sleep 300")
    assert follower.stdout is not None and follower.stdout.readline() == "started\n"
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=30)
    assert follower.returncode == EXIT_INTERRUPTED, err
    job_id = err.split()[1]  # "job ID submitted"
    assert f"`freight wait {job_id}` gets back to it" in err
    assert cli("cancel", job_id).returncode == 0
