"""`FREIGHT_RUNNER_EXECUTOR=local`: the executor contract, run against the Docker executor and
the local one alike, then the lifecycle checks with a runner that runs commands as
subprocesses: exit codes, environment, GPUs, timeout, cancel, and a runner restart."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from freight import Client
from freight_server.services.runner.executor import (
    ContainerSpec,
    DockerExecutor,
    Executor,
    ExecutorError,
    PathNotFound,
)
from freight_server.services.runner.local import LocalExecutor
from freight_server.shared.config import Settings
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import docker_client

# The same lifecycle checks the Docker runner passes, collected here against a local runner.
from tests.e2e.test_lifecycle import (  # noqa: F401
    test_a_runner_is_free_again_once_its_jobs_end,
    test_cancel_a_running_job,
    test_document_example_runs_to_complete,
    test_failing_command_fails_with_its_exit_code,
    test_timeout_is_enforced_by_the_runner,
)
from tests.waiting import wait_until

# -- the executor contract, for both executors --------------------------------------------------


@pytest.fixture(params=["docker", "local"])
def executor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Executor]:
    if request.param == "docker":
        yield DockerExecutor(docker_client())
    else:
        yield LocalExecutor(tmp_path / "local-jobs", poll_interval=0.05)


@pytest.fixture
def spec(executor: Executor) -> Iterator[Any]:
    names: list[str] = []

    def make(command: str, **fields: Any) -> ContainerSpec:
        name = f"contract-{uuid.uuid4().hex[:12]}"
        names.append(name)
        labels = {"freight.namespace": name}
        return ContainerSpec(name=name, image=TEST_IMAGE, command=command, labels=labels, **fields)

    yield make
    for name in names:
        found = executor.find(name)
        if found is not None:
            executor.remove(found.container_id)


def run(executor: Executor, spec: ContainerSpec) -> int:
    container_id = executor.create(spec)
    executor.start(container_id)
    return executor.wait(container_id).exit_code


def test_create_find_start_wait_remove(executor, spec):
    job = spec("echo hello; exit 3")
    assert executor.find(job.name) is None
    container_id = executor.create(job)
    found = executor.find(job.name)
    assert found is not None and found.container_id == container_id and not found.started
    executor.start(container_id)
    assert executor.find(job.name).started
    assert executor.wait(container_id).exit_code == 3
    executor.remove(container_id)
    assert executor.find(job.name) is None


def test_stop_sends_sigterm_first(executor, spec):
    container_id = executor.create(spec("sleep 300"))
    executor.start(container_id)
    executor.stop(container_id, grace=5)
    assert executor.wait(container_id).exit_code == 128 + signal.SIGTERM


def test_stop_kills_what_ignores_sigterm_after_the_grace(executor, spec):
    container_id = executor.create(spec("trap '' TERM; touch ready; sleep 300"))
    executor.start(container_id)
    wait_until(lambda: is_ready(executor, container_id), what="the trap to be set")
    executor.stop(container_id, grace=1)
    assert executor.wait(container_id).exit_code == 128 + signal.SIGKILL


def is_ready(executor: Executor, container_id: str) -> bool:
    """Whether the command wrote `ready` in its working directory."""
    if isinstance(executor, LocalExecutor):
        return (executor.work_dir(container_id) / "ready").exists()
    probe = docker_client().containers.get(container_id).exec_run("test -e ready")
    return bool(probe.exit_code == 0)


def test_environment_and_simulated_gpus(executor, spec, monkeypatch):
    monkeypatch.setenv("FREIGHT_X", "a runner's secret")
    check = 'test "$A" = b && test "$CUDA_VISIBLE_DEVICES" = GPU-sim-r-1 && test -z "$FREIGHT_X"'
    job = spec(check, env={"A": "b"}, gpus=("GPU-sim-r-1",), simulated_gpus=True)
    assert run(executor, job) == 0
    assert run(executor, spec('test -z "$CUDA_VISIBLE_DEVICES"')) == 0


def test_a_new_executor_finds_and_follows_a_started_command(executor, spec, tmp_path):
    job = spec("sleep 1; exit 4")
    container_id = executor.create(job)
    executor.start(container_id)
    # As a restarted runner sees it: a new executor, without the old one's memory.
    if isinstance(executor, LocalExecutor):
        again: Executor = LocalExecutor(tmp_path / "local-jobs", poll_interval=0.05)
    else:
        again = DockerExecutor(docker_client())
    found = again.find(job.name)
    assert found is not None and found.started
    assert again.wait(found.container_id).exit_code == 4


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size, member.mtime = len(data), 1_700_000_000
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def files_in(archive) -> dict[str, bytes]:
    try:
        data = b"".join(archive)
    finally:
        archive.close()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def test_files_in_and_out(executor, spec):
    """What freight_server/services/runner/files.py does with a job's files, on either executor."""
    job = spec("cat in/a.txt > out.txt; echo out; echo err >&2")
    container_id = executor.create(job)
    executor.put_archive(container_id, "/", tar_of({"job/in/a.txt": b"input"}))
    executor.start(container_id)
    assert executor.wait(container_id).exit_code == 0

    added = {c.path for c in executor.changes(container_id) if c.kind == "added"}
    assert {"/job/in/a.txt", "/job/out.txt"} <= added
    out = executor.stat(container_id, "/job/out.txt")
    assert (out.type, out.size, out.name) == ("file", 5, "out.txt")
    assert executor.stat(container_id, "/job/in").type == "dir"
    assert files_in(executor.read_archive(container_id, "/job")) == {
        "job/in/a.txt": b"input",
        "job/out.txt": b"input",
    }
    assert b"".join(executor.output(container_id, "stdout")) == b"out\n"
    assert b"".join(executor.output(container_id, "stderr")) == b"err\n"
    with pytest.raises(PathNotFound):
        executor.stat(container_id, "/job/missing")


def test_output_is_followed_as_written_until_the_end(executor, spec):
    container_id = executor.create(spec("echo first; echo oops >&2; sleep 0.5; echo second"))
    executor.start(container_id)
    writes = list(executor.follow_output(container_id))  # ends when the command does
    assert b"".join(d for s, d in writes if s == 1) == b"first\nsecond\n"
    assert b"".join(d for s, d in writes if s == 2) == b"oops\n"
    assert writes[-1] == (1, b"second\n")
    assert executor.wait(container_id).exit_code == 0


def test_local_paths_stay_inside_the_jobs_root(tmp_path):
    executor = LocalExecutor(tmp_path / "local-jobs")
    job = ContainerSpec(
        name="escape", image="-", command="ln -s / host; ln -s /etc/passwd pw", labels={}
    )
    container_id = executor.create(job)
    with pytest.raises(ExecutorError):
        executor.put_archive(container_id, "/", tar_of({"../../outside": b"x"}))
    assert not (tmp_path / "outside").exists()
    executor.start(container_id)
    assert executor.wait(container_id).exit_code == 0
    with pytest.raises(PathNotFound):
        executor.stat(container_id, "/job/host/etc/passwd")  # through the job's symlink
    link = executor.stat(container_id, "/job/pw")  # the link itself, never followed
    assert (link.type, link.link_target) == ("symlink", "/etc/passwd")
    with pytest.raises(PathNotFound):
        executor.stat(container_id, "/../../etc/passwd")  # the job's root, not the host's


def test_local_commands_run_in_their_own_directory(tmp_path):
    executor = LocalExecutor(tmp_path / "local-jobs")
    job = ContainerSpec(name="own-dir", image="ignored", command="pwd > where; exit 0", labels={})
    container_id = executor.create(job)
    executor.start(container_id)
    assert executor.wait(container_id).exit_code == 0
    work = executor.work_dir(container_id)
    assert work == (tmp_path / "local-jobs" / "own-dir" / "root" / "job").resolve()
    assert (work / "where").read_text().strip() == str(work)
    executor.remove(container_id)
    assert not (tmp_path / "local-jobs" / "own-dir").exists()


def test_a_command_whose_supervisor_died_ends_as_killed_and_the_next_gets_another(tmp_path):
    executor = LocalExecutor(tmp_path / "local-jobs", poll_interval=0.05)
    job = ContainerSpec(name="orphaned", image="-", command="sleep 1; exit 4", labels={})
    container_id = executor.create(job)
    executor.start(container_id)
    recorded = (tmp_path / "local-jobs" / "orphaned" / "pid").read_text().split()
    os.kill(int(recorded[2]), signal.SIGKILL)  # the supervisor: pid, start; its pid, start
    # Its exit code had nobody left to record it: killed, as a container whose engine died.
    assert executor.wait(container_id).exit_code == 128 + signal.SIGKILL
    again = ContainerSpec(name="after", image="-", command="exit 5", labels={})
    assert run(executor, again) == 5


# -- the lifecycle, with a local runner ----------------------------------------------------------


@pytest.fixture
def runner_overrides() -> dict[str, Any]:
    return {"runner_executor": "local", "runner_gpus": 1}


@pytest.fixture(autouse=True)
def no_leftover_processes(settings: Settings) -> Iterator[None]:
    """Commands outlive their runner on purpose; after a test, none may outlive the test."""
    yield
    root = settings.home / "local-jobs"
    if root.exists():
        leftovers = LocalExecutor(root)
        for attempt in root.iterdir():
            leftovers.remove(attempt.name)


def test_local_job_gets_its_files_gpu_and_directory(cluster, tmp_path):
    gpu = f"GPU-sim-{cluster.settings.runner_id}-0"
    home = cluster.settings.home.resolve()
    command = (
        f'test "$CUDA_VISIBLE_DEVICES" = {gpu} || exit 10; '
        f'case "$PWD" in {home}/local-jobs/*/root/job) ;; *) exit 11;; esac; '
        "tr a-z A-Z < in/a.txt > out.txt; mkdir empty; echo done; echo warned >&2"
    )
    with Client(
        cluster.url,
        amqp_url=cluster.settings.amqp_url,
        response_exchange=cluster.settings.response_exchange,
    ) as client:
        submitted = client.submit(command, gpus=1, files={"in/a.txt": io.BytesIO(b"input")})
        job = client.wait(submitted.job_id, timeout=60)
        assert (job.status, job.exit_code) == ("COMPLETE", 0), job
        assert client.logs(job.job_id, stream="stdout") == "done\n"
        assert client.logs(job.job_id, stream="stderr") == "warned\n"
        listed = {e.name: e.type for e in client.files_ls(job.job_id, "/job")}
        assert listed == {"in": "dir", "out.txt": "file", "empty": "dir"}
        assert client.files_ls(job.job_id, "/job/empty") == []
        saved = {
            path: client.files_get(job.job_id, path, tmp_path / path.replace("/", "_"))
            for path in ("/job/out.txt", "/.freight/stdout", "/.freight/stderr")
        }
    assert saved == {"/job/out.txt": 5, "/.freight/stdout": 5, "/.freight/stderr": 7}
    assert (tmp_path / "_job_out.txt").read_bytes() == b"INPUT"
    assert (tmp_path / "_.freight_stdout").read_bytes() == b"done\n"
    assert (tmp_path / "_.freight_stderr").read_bytes() == b"warned\n"
    assert [g["uuid"] for g in cluster.job(job.job_id)["assigned_gpus"]] == [gpu]


def test_local_job_survives_a_runner_restart(cluster, tmp_path):
    release = tmp_path / "go"
    job_id = cluster.submit(f"while ! test -e {release}; do sleep 0.1; done; exit 5")["job_id"]
    cluster.wait_for_status(job_id, "RUNNING")
    cluster.kill("runner")
    cluster.start("runner", runner_executor="local", runner_gpus=1)
    release.touch()
    job = cluster.wait_for_status(job_id, "FAILED")
    assert (job["exit_code"], job["reason"], job["attempt"]) == (5, "exit code 5", 1)

    running = cluster.submit("sleep 300")["job_id"]
    cluster.wait_for_status(running, "RUNNING")
    cluster.kill("runner")
    cluster.start("runner", runner_executor="local", runner_gpus=1)
    assert requests.delete(f"{cluster.url}/jobs/{running}").status_code == 202
    assert cluster.wait_for_status(running, "FAILED")["reason"] == "cancelled"
