"""Where an attempt's command runs. The Docker engine is the executor; its errors are mapped here,
once, into ours: the engine's failure (ExecutorError) is kept apart from the command's."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker
import docker.errors
import requests.exceptions

log = logging.getLogger(__name__)

LABEL_JOB = "freight.job_id"
LABEL_ATTEMPT = "freight.attempt"
LABEL_RUNNER = "freight.runner"
LABEL_NAMESPACE = "freight.namespace"


class ExecutorError(RuntimeError):
    """The engine failed us (not the command): the attempt ends FAILED with this reason."""


class ImageUnavailable(ExecutorError):
    pass


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: str
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/job"
    network: str = "none"


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    oom_killed: bool = False


@dataclass(frozen=True)
class ContainerState:
    container_id: str
    started: bool  # it has been started at least once (running or exited)


class Executor(Protocol):
    def find(self, name: str) -> ContainerState | None:
        """The container with this name, if it exists."""

    def create(self, spec: ContainerSpec) -> str:
        """Create the container (pulling its image if needed); returns its id."""

    def start(self, container_id: str) -> None: ...

    def wait(self, container_id: str) -> ExitStatus:
        """Block until the container exits."""

    def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""

    def remove(self, container_id: str) -> None: ...


class DockerExecutor:
    def __init__(self, client: docker.DockerClient):
        self._client = client
        self._api = client.api

    @classmethod
    def from_env(cls, pool_size: int = 32) -> DockerExecutor:
        try:
            client = docker.from_env(max_pool_size=pool_size)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ExecutorError(
                f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
            ) from None
        return cls(client)

    def find(self, name: str) -> ContainerState | None:
        try:
            info = self._api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not look for container {name}: {_explain(exc)}") from None
        return ContainerState(info["Id"], info["State"]["Status"] != "created")

    def create(self, spec: ContainerSpec) -> str:
        self._ensure_image(spec.image)
        container = self._call(
            "create the container",
            self._api.create_container,
            spec.image,
            ["sh", "-c", spec.command],
            name=spec.name,
            labels=dict(spec.labels),
            environment=dict(spec.env),
            working_dir=spec.workdir,
            # An init process forwards SIGTERM to the command and reaps its children.
            host_config=self._api.create_host_config(network_mode=spec.network, init=True),
            network_disabled=spec.network == "none",
        )
        return str(container["Id"])

    def start(self, container_id: str) -> None:
        self._call("start the container", self._api.start, container_id)

    def wait(self, container_id: str) -> ExitStatus:
        while True:
            try:
                result = self._api.wait(container_id, timeout=None)
                break
            except requests.exceptions.ReadTimeout:
                continue
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                raise ExecutorError(f"lost track of the container: {_explain(exc)}") from None
        state = self._inspect(container_id)["State"]
        return ExitStatus(int(result.get("StatusCode", -1)), bool(state.get("OOMKilled")))

    def stop(self, container_id: str, grace: float) -> None:
        try:
            self._api.stop(container_id, timeout=max(0, round(grace)))
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            log.warning("could not stop %s: %s", container_id[:12], _explain(exc))

    def remove(self, container_id: str) -> None:
        try:
            self._api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            log.warning("could not remove %s: %s", container_id[:12], _explain(exc))

    def _ensure_image(self, image: str) -> None:
        try:
            self._api.inspect_image(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not inspect image {image!r}: {_explain(exc)}") from None
        log.info("pulling image %s", image)
        try:
            self._client.images.pull(image)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ImageUnavailable(f"image {image!r} is not available: {_explain(exc)}") from None

    def _inspect(self, container_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "inspect the container", self._api.inspect_container, container_id
        )
        return result

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not {what}: {_explain(exc)}") from None


def _explain(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)
