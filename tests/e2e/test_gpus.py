"""GPUs and resources as a user sees them: two runners with simulated GPUs share the jobs without
ever giving one GPU twice, a job that cannot run says why, limits hold in a real container, and
the engine receives the `--gpus` device request. Where a real GPU exists, the `gpu` tests run
the real NVML inventory and a real GPU container."""

from __future__ import annotations

import ctypes.util
import sys
import uuid
from typing import Any

import pytest
import requests

from freight_server.services.runner.executor import ContainerSpec, DockerExecutor, ExecutorError
from freight_server.services.runner.gpus import NvmlInventory
from freight_server.services.runner.local import LocalExecutor
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import docker_client
from tests.waiting import wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def runner_overrides() -> dict[str, Any]:
    return {"runner_gpus": 2}


def container_env(job_id: str) -> dict[str, str]:
    [container] = docker_client().containers.list(filters={"label": f"freight.job_id={job_id}"})
    return dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])


def test_four_one_gpu_jobs_on_two_and_one_gpus(cluster, tmp_path):
    runner_a = cluster.settings.runner_id
    runner_b = f"{runner_a}-b"
    cluster.start("runner", name="runner-b", runner_id=runner_b, runner_gpus=1, home=tmp_path / "b")
    ids = [cluster.submit("sleep 300", gpus="1")["job_id"] for _ in range(4)]

    def three_running() -> list[dict[str, Any]] | None:
        jobs = [cluster.job(i) for i in ids]
        return jobs if sum(j["status"] == "RUNNING" for j in jobs) == 3 else None

    jobs = wait_until(three_running, timeout=60, what="three jobs running")
    running = [j for j in jobs if j["status"] == "RUNNING"]
    [queued] = [j for j in jobs if j["status"] == "QUEUED"]
    given = {j["job_id"]: j["assigned_gpus"][0] for j in running}
    assert all(len(j["assigned_gpus"]) == 1 for j in running)
    assert sorted(g["uuid"] for g in given.values()) == [
        f"GPU-sim-{runner_a}-0",
        f"GPU-sim-{runner_a}-1",
        f"GPU-sim-{runner_b}-0",
    ]
    assert sorted(j["runner"] for j in running) == sorted([runner_a, runner_a, runner_b])
    assert all(set(g) == {"index", "uuid", "name"} for g in given.values())
    for job_id, gpu in given.items():  # each container is told of its own GPU only
        env = container_env(job_id)
        assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == gpu["uuid"]

    reason = "waiting for 1 GPU; most free on one runner: 0"
    wait_until(lambda: cluster.job(queued["job_id"])["reason"] == reason, what=reason)

    big = cluster.submit("true", gpus="3")["job_id"]
    never = "no runner has 3 GPUs (most on one runner: 2); waiting for one that does to join"
    wait_until(lambda: cluster.job(big)["reason"] == never, what=never)

    ended = running[0]
    assert requests.delete(f"{cluster.url}/jobs/{ended['job_id']}").status_code == 202
    job = cluster.wait_for_status(queued["job_id"], "RUNNING")
    assert job["assigned_gpus"] == ended["assigned_gpus"] and job["reason"] is None
    assert cluster.job(big)["status"] == "QUEUED"


# cgroup v1 (this machine) or v2: the CPU quota per 100ms period, the memory limit, no extra swap.
CGROUP_LIMITS = """
cd /sys/fs/cgroup
quota=$(cat cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 cpu.max)
test "$quota" = 50000 || exit 10
limit=$(cat memory/memory.limit_in_bytes 2>/dev/null || cat memory.max)
test "$limit" = 67108864 || exit 11
if test -e memory/memory.memsw.limit_in_bytes; then
  test "$(cat memory/memory.memsw.limit_in_bytes)" = 67108864 || exit 12
fi
if test -e memory.swap.max; then test "$(cat memory.swap.max)" = 0 || exit 13; fi
"""


def test_limits_hold_in_a_real_container(cluster):
    hog = cluster.submit("dd if=/dev/zero of=/dev/null bs=200M count=1", memory="32")["job_id"]
    limited = cluster.submit(CGROUP_LIMITS, cpus="0.5", memory="64")["job_id"]

    job = cluster.wait_for_status(hog, "COMPLETE", "FAILED")
    assert (job["status"], job["reason"], job["memory"]) == ("FAILED", "out of memory", 32)
    job = cluster.wait_for_status(limited, "COMPLETE", "FAILED")
    assert (job["status"], job["exit_code"]) == ("COMPLETE", 0), job
    assert (job["cpus"], job["memory"]) == (0.5, 64)


def gpu_spec(name: str, command: str, gpus: tuple[str, ...]) -> ContainerSpec:
    return ContainerSpec(
        name=name,
        image=TEST_IMAGE,
        command=command,
        labels={"freight.namespace": name},
        gpus=gpus,
    )


def test_engine_receives_the_gpus_device_request():
    """`--gpus '"device=UUID1,UUID2"'`, as the real engine records it. Starting it needs the
    NVIDIA runtime; an engine without one refuses, and that is Freight's error, not the job's."""
    executor = DockerExecutor(docker_client())
    uuids = ("GPU-5f3a0c1e-0000-4000-8000-000000000000", "GPU-5f3a0c1e-0000-4000-8000-000000000001")
    container_id = executor.create(gpu_spec(f"gpu-{uuid.uuid4().hex[:8]}", "true", uuids))
    try:
        host_config = docker_client().api.inspect_container(container_id)["HostConfig"]
        assert host_config["DeviceRequests"] == [
            {
                "Driver": "",
                "Count": 0,
                "DeviceIDs": list(uuids),
                "Capabilities": [["gpu"]],
                "Options": {},
            }
        ]
        if not _has_nvidia_runtime():
            with pytest.raises(ExecutorError, match="could not start the container"):
                executor.start(container_id)
    finally:
        executor.remove(container_id)


def _has_nvidia_runtime() -> bool:
    return "nvidia" in (docker_client().info().get("Runtimes") or {})


def _real_gpus():
    gpus = NvmlInventory().discover()
    if not gpus:
        pytest.skip("no NVIDIA GPU or driver on this host (NVML found none)")
    return gpus


@pytest.mark.gpu
def test_real_gpu_container_sees_exactly_its_gpu():
    gpus = _real_gpus()
    if not _has_nvidia_runtime():
        pytest.skip("this Docker engine has no NVIDIA runtime")
    executor = DockerExecutor(docker_client())
    count = "test $(ls /dev | grep -c '^nvidia[0-9][0-9]*$') = 1"  # one GPU's device node
    container_id = executor.create(gpu_spec(f"gpu-{uuid.uuid4().hex[:8]}", count, (gpus[-1].uuid,)))
    try:
        executor.start(container_id)
        assert executor.wait(container_id).exit_code == 0
    finally:
        executor.remove(container_id)


CUDA_SEES = """
import ctypes, sys
cuda = ctypes.CDLL(sys.argv[1])
assert cuda.cuInit(0) == 0
count, device = ctypes.c_int(), ctypes.c_int()
cuda.cuDeviceGetCount(ctypes.byref(count))
cuda.cuDeviceGet(ctypes.byref(device), 0)
name, raw = ctypes.create_string_buffer(256), ctypes.create_string_buffer(16)
cuda.cuDeviceGetName(name, 256, device)
cuda.cuDeviceGetUuid(raw, device)
h = raw.raw.hex()
print(count.value, f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", name.value.decode())
"""


@pytest.mark.gpu
def test_real_gpu_through_the_local_executor(tmp_path):
    gpus = _real_gpus()
    libcuda = ctypes.util.find_library("cuda") or "libcuda.so.1"
    script = tmp_path / "cuda_sees.py"
    script.write_text(CUDA_SEES)
    executor = LocalExecutor(tmp_path / "jobs")
    gpu = gpus[-1]
    command = f"{sys.executable} {script} {libcuda} && {{ nvidia-smi -L || true; }}"
    name = executor.create(gpu_spec("gpu-local", command, (gpu.uuid,)))
    try:
        executor.start(name)
        assert executor.wait(name).exit_code == 0
        output = b"".join(executor.output(name, "stdout")).decode()
        sys.stdout.write(output)  # for the record: what the job saw
        assert output.splitlines()[0] == f"1 {gpu.uuid} {gpu.name}"
    finally:
        executor.remove(name)
