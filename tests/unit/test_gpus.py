"""The GPU inventory (NVML faked behind the interface pynvml is used through), what heartbeats
report, and what a container is given: a device request for real GPUs, environment only for
simulated ones, and the CPU and memory limits."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import docker
import pytest

from freight_server.services.runner.executor import gpu_environment, resource_limits
from freight_server.services.runner.gpus import (
    Gpu,
    HostResources,
    NvmlInventory,
    SimulatedInventory,
    host_resources,
    inventory_for,
)
from freight_server.shared.config import ConfigError, Settings
from freight_server.shared.jobs import JobView, Status
from tests.unit.attempts import spec_for

GIB = 1024**3


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """pynvml's calls as the inventory makes them, over GPUs given as (uuid, name, bytes)."""

    NVMLError = FakeNvmlError

    def __init__(self, gpus=(), fail_init=False, as_bytes=False):
        self._gpus = list(gpus)
        self._fail_init = fail_init
        self._as_bytes = as_bytes
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")
        if self._fail_init:
            raise FakeNvmlError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self._gpus[index]

    def nvmlDeviceGetUUID(self, handle):
        return handle[0].encode() if self._as_bytes else handle[0]

    def nvmlDeviceGetName(self, handle):
        return handle[1].encode() if self._as_bytes else handle[1]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=handle[2], free=handle[2], used=0)


TWO_H100 = [
    ("GPU-5f3a0c1e-0000-4000-8000-000000000000", "NVIDIA H100 80GB HBM3", 80 * GIB),
    ("GPU-5f3a0c1e-0000-4000-8000-000000000001", "NVIDIA H100 80GB HBM3", 80 * GIB),
]


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_nvml_inventory_reads_index_uuid_name_and_memory(as_bytes):
    nvml = FakeNvml(TWO_H100, as_bytes=as_bytes)
    gpus = NvmlInventory(nvml).discover()
    assert gpus == (
        Gpu(0, TWO_H100[0][0], "NVIDIA H100 80GB HBM3", 81920),
        Gpu(1, TWO_H100[1][0], "NVIDIA H100 80GB HBM3", 81920),
    )
    assert nvml.calls == ["init", "shutdown"]


def test_no_driver_means_zero_gpus_and_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="freight_server.services.runner.gpus")
    assert NvmlInventory(FakeNvml(fail_init=True)).discover() == ()
    assert [r.getMessage() for r in caplog.records] == [
        "no GPUs: NVML is not available (NVML Shared Library Not Found)"
    ]


def test_the_real_nvml_on_a_host_without_gpus_is_not_a_crash():
    # Here (no driver) this is the real pynvml failing to load; on a GPU host it lists them.
    gpus = NvmlInventory().discover()
    assert all(g.uuid.startswith("GPU-") and g.memory_mb > 0 for g in gpus)


def test_simulated_gpus_are_deterministic_and_name_their_runner():
    first = SimulatedInventory("runner-a", 2, 16384).discover()
    assert first == SimulatedInventory("runner-a", 2, 16384).discover()
    assert [g.uuid for g in first] == ["GPU-sim-runner-a-0", "GPU-sim-runner-a-1"]
    other = SimulatedInventory("runner-b", 2, 16384).discover()
    assert not {g.uuid for g in first} & {g.uuid for g in other}


def test_settings_choose_the_inventory():
    settings = Settings.from_env({"FREIGHT_RUNNER_GPUS": "3", "FREIGHT_RUNNER_ID": "r"})
    inventory = inventory_for(settings.runner_id, settings.runner_gpus, 1000)
    assert inventory.simulated and len(inventory.discover()) == 3
    assert isinstance(inventory_for("r", None, 1000), NvmlInventory)
    assert Settings.from_env({"FREIGHT_RUNNER_GPUS": "0"}).runner_gpus == 0
    with pytest.raises(ConfigError, match="FREIGHT_RUNNER_EXECUTOR"):
        Settings.from_env({"FREIGHT_RUNNER_EXECUTOR": "podman"})
    with pytest.raises(ConfigError, match="FREIGHT_RUNNER_CPUS"):
        Settings.from_env({"FREIGHT_RUNNER_CPUS": "nan"})


def test_host_totals_unless_overridden():
    host = host_resources(SimulatedInventory("r", 0, 1))
    assert host.cpus >= 1 and host.memory_mb > 0
    assert host_resources(SimulatedInventory("r", 0, 1), cpus=2.5, memory_mb=512) == (
        HostResources((), 2.5, 512, simulated_gpus=True)
    )


def queued_job(**fields) -> JobView:
    return JobView(
        job_id="7d1c1f9e-0000-4000-8000-000000000001",
        status=Status.RUNNING,
        command="nvidia-smi -L",
        image="busybox",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **fields,
    )


def test_heartbeat_reports_inventory_totals_and_what_is_free():
    resources = HostResources(NvmlInventory(FakeNvml(TWO_H100)).discover(), 16.0, 65536)
    running = queued_job(
        cpus=4.0, memory=8192, assigned_gpus=({"index": 1, "uuid": TWO_H100[1][0]},)
    )
    report = resources.report(slots=4, running=[running])
    assert report["gpus"] == [
        {"index": 0, "uuid": TWO_H100[0][0], "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81920},
        {"index": 1, "uuid": TWO_H100[1][0], "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81920},
    ]
    assert (report["slots"], report["cpus"], report["memory_mb"]) == (4, 16.0, 65536)
    assert report["free"] == {
        "slots": 3,
        "gpus": [TWO_H100[0][0]],
        "cpus": 12.0,
        "memory_mb": 57344,
    }


def test_real_gpus_go_as_a_device_request_like_docker_run_gpus():
    """`docker run --gpus '"device=UUID1,UUID2"'`: the engine receives exactly this request."""
    gpus = [g.to_dict() for g in NvmlInventory(FakeNvml(TWO_H100)).discover()]
    spec = spec_for(queued_job(gpus=2, assigned_gpus=tuple(gpus)), simulated_gpus=False)
    assert spec.gpus == (TWO_H100[0][0], TWO_H100[1][0])

    limits = resource_limits(spec)
    [request] = limits["device_requests"]
    assert isinstance(request, docker.types.DeviceRequest)
    assert request.device_ids == [TWO_H100[0][0], TWO_H100[1][0]]
    assert request.capabilities == [["gpu"]] and request.count == 0
    # What the SDK sends the engine (the same JSON as the docker CLI's --gpus):
    host_config = docker.APIClient(version="1.41").create_host_config(**limits)
    assert host_config["DeviceRequests"] == [
        {
            "Driver": "",
            "Count": 0,
            "DeviceIDs": [TWO_H100[0][0], TWO_H100[1][0]],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]
    # The NVIDIA runtime names the GPUs itself; Freight adds nothing that could disagree.
    assert gpu_environment(spec) == {}


def test_simulated_gpus_go_only_as_environment():
    gpus = [g.to_dict() for g in SimulatedInventory("r", 2, 1000).discover()]
    spec = spec_for(queued_job(gpus=1, assigned_gpus=(gpus[1],)), simulated_gpus=True)
    assert "device_requests" not in resource_limits(spec)
    assert gpu_environment(spec) == {
        "CUDA_VISIBLE_DEVICES": "GPU-sim-r-1",
        "NVIDIA_VISIBLE_DEVICES": "GPU-sim-r-1",
    }


def test_a_job_without_gpus_sees_none_of_the_hosts():
    spec = spec_for(queued_job(), simulated_gpus=False)
    assert "device_requests" not in resource_limits(spec)
    assert gpu_environment(spec) == {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}


def test_cpu_quota_and_memory_limit_without_extra_swap():
    spec = spec_for(queued_job(cpus=0.5, memory=32), simulated_gpus=False)
    assert resource_limits(spec) == {
        "nano_cpus": 500_000_000,
        "mem_limit": 32 * 1024 * 1024,
        "memswap_limit": 32 * 1024 * 1024,
    }
    assert resource_limits(spec_for(queued_job(), simulated_gpus=False)) == {}
