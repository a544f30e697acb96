"""What a runner's host offers jobs: its GPUs (read with NVML, or simulated), CPUs and memory.

NVML is an edge like Docker: it is reached only through `Nvml`, the few pynvml calls used here,
so a test can stand in a fake NVML for a GPU this machine does not have.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from freight_server.shared.jobs import JobView

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mb: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "memory_mb": self.memory_mb,
        }


class GpuInventory(Protocol):
    # A simulated GPU reaches a job only through its environment: no engine could attach it.
    simulated: bool

    def discover(self) -> tuple[Gpu, ...]:
        """The host's GPUs; none (never an error) where there are none."""


class Nvml(Protocol):
    """The part of pynvml (nvidia-ml-py) the inventory uses."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...


class NvmlInventory:
    simulated = False

    def __init__(self, nvml: Nvml | None = None):
        self._nvml = nvml

    def discover(self) -> tuple[Gpu, ...]:
        nvml = self._nvml or _load_pynvml()
        if nvml is None:
            log.info("no GPUs: nvidia-ml-py is not installed")
            return ()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            log.info("no GPUs: NVML is not available (%s)", exc)
            return ()
        try:
            gpus = tuple(_read_gpu(nvml, i) for i in range(nvml.nvmlDeviceGetCount()))
        except nvml.NVMLError as exc:
            log.warning("no GPUs: NVML failed while reading the GPUs (%s)", exc)
            return ()
        finally:
            nvml.nvmlShutdown()
        for gpu in gpus:
            log.info("GPU %d: %s, %s, %d MiB", gpu.index, gpu.uuid, gpu.name, gpu.memory_mb)
        return gpus


def _read_gpu(nvml: Nvml, index: int) -> Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return Gpu(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_mb=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // MIB,
    )


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases answer bytes.
    return value.decode() if isinstance(value, bytes) else value


def _load_pynvml() -> Nvml | None:
    try:
        import pynvml
    except ImportError:
        return None
    nvml: Nvml = pynvml  # type: ignore[assignment]
    return nvml


class SimulatedInventory:
    """`FREIGHT_RUNNER_GPUS=N`: N made-up GPUs, for tests and demos on hosts without any.

    Their UUIDs include the runner's id, so two simulated runners never name the same GPU.
    """

    simulated = True

    def __init__(self, runner_id: str, count: int, memory_mb: int):
        self._runner_id = runner_id
        self._count = count
        self._memory_mb = memory_mb

    def discover(self) -> tuple[Gpu, ...]:
        return tuple(
            Gpu(i, f"GPU-sim-{self._runner_id}-{i}", "Simulated GPU", self._memory_mb)
            for i in range(self._count)
        )


def visible_devices(uuids: Sequence[str]) -> dict[str, str]:
    """The environment that tells CUDA (and the NVIDIA runtime) which GPUs a job may use.

    UUIDs rather than indices: CUDA's own device order need not match NVML's. An empty value
    hides every GPU from a job that asked for none.
    """
    listed = ",".join(uuids)
    return {"CUDA_VISIBLE_DEVICES": listed, "NVIDIA_VISIBLE_DEVICES": listed or "void"}


@dataclass(frozen=True)
class HostResources:
    gpus: tuple[Gpu, ...]
    cpus: float
    memory_mb: int
    simulated_gpus: bool = False

    @classmethod
    def without_gpus(cls) -> HostResources:
        return cls((), float(os.cpu_count() or 1), _host_memory_mb())

    def report(self, slots: int, running: Sequence[JobView]) -> dict[str, Any]:
        """What a heartbeat tells: the whole inventory, and what the running jobs leave free."""
        held = {g["uuid"] for job in running for g in job.assigned_gpus}
        return {
            "slots": slots,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "free": {
                "slots": max(0, slots - len(running)),
                "gpus": [gpu.uuid for gpu in self.gpus if gpu.uuid not in held],
                "cpus": max(0.0, self.cpus - sum(job.cpus or 0 for job in running)),
                "memory_mb": max(0, self.memory_mb - sum(job.memory or 0 for job in running)),
            },
        }


def host_resources(
    inventory: GpuInventory,
    cpus: float | None = None,
    memory_mb: int | None = None,
) -> HostResources:
    """The inventory, with the host's CPU count and memory unless the settings override them."""
    return HostResources(
        gpus=inventory.discover(),
        cpus=cpus if cpus is not None else float(os.cpu_count() or 1),
        memory_mb=memory_mb if memory_mb is not None else _host_memory_mb(),
        simulated_gpus=inventory.simulated,
    )


def _host_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB


def inventory_for(runner_id: str, simulated: int | None, simulated_memory_mb: int) -> GpuInventory:
    if simulated is not None:
        return SimulatedInventory(runner_id, simulated, simulated_memory_mb)
    return NvmlInventory()
