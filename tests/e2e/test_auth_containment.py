"""The engine's own record of a job's container: what Freight asked for is what it got."""

from __future__ import annotations

import uuid

import pytest

from freight_server.services.runner.executor import Confinement, ContainerSpec, DockerExecutor
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import docker_client


def job_spec(**fields) -> ContainerSpec:
    name = f"containment-{uuid.uuid4().hex[:8]}"
    return ContainerSpec(
        name=name, image=TEST_IMAGE, command="true", labels={"freight.namespace": name}, **fields
    )


@pytest.fixture
def executor():
    return DockerExecutor(docker_client(), Confinement(pids_limit=100, default_memory_mb=64))


def test_the_engine_holds_a_job_as_asked(executor):
    container_id = executor.create(job_spec())
    try:
        config = docker_client().api.inspect_container(container_id)
        host = config["HostConfig"]
        assert host["CapDrop"] == ["ALL"]
        assert sorted(host["CapAdd"]) == [
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "KILL",
            "SETGID",
            "SETUID",
        ]
        assert host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["PidsLimit"] == 100
        assert host["Memory"] == host["MemorySwap"] == 64 * 1024 * 1024
        assert host["NetworkMode"] == "none" and host["Privileged"] is False
        assert not host["Binds"] and config["Mounts"] == []
        assert host["ReadonlyRootfs"] is False
    finally:
        executor.remove(container_id)


def test_a_read_only_root_and_its_workdir_volume_go_with_the_container():
    executor = DockerExecutor(docker_client(), Confinement(read_only=True))
    container_id = executor.create(job_spec(memory_mb=32))
    client = docker_client()
    try:
        config = client.api.inspect_container(container_id)
        assert config["HostConfig"]["ReadonlyRootfs"] is True
        assert config["HostConfig"]["Tmpfs"] == {"/tmp": "rw,nosuid,nodev"}
        assert config["HostConfig"]["Memory"] == 32 * 1024 * 1024  # the job's own, not a default
        [mount] = config["Mounts"]
        assert (mount["Type"], mount["Destination"], mount["RW"]) == ("volume", "/job", True)
        # What the engine's diff cannot see inside, the executor reports as the job's.
        assert ("/job", "added") in [(c.path, c.kind) for c in executor.changes(container_id)]
    finally:
        executor.remove(container_id)
    assert mount["Name"] not in [v.name for v in client.volumes.list()]
