"""Where an attempt's command runs. The Docker engine is the executor; its errors are mapped here,
once, into ours: the engine's failure (ExecutorError) is kept apart from the command's."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import docker
import docker.errors
import docker.types
import requests.exceptions
from docker.transport import UnixHTTPAdapter

from freight_server.services.runner.docker_logs import (
    Moment,
    OutputPiece,
    moment_of,
    read_attached,
    read_output,
)
from freight_server.services.runner.gpus import MIB, visible_devices
from freight_server.shared.config import Settings

log = logging.getLogger(__name__)

SIGKILLED = 128 + 9  # the exit status of a process the kernel (or anyone) killed with SIGKILL
# How long a SIGKILL under a memory limit is looked for among the engine's OOM events.
OOM_EVENT_TRIES = 3
OOM_EVENT_WAIT = 0.1

LABEL_JOB = "freight.job_id"
LABEL_ATTEMPT = "freight.attempt"
LABEL_RUNNER = "freight.runner"
LABEL_NAMESPACE = "freight.namespace"


class ExecutorError(RuntimeError):
    """The engine failed us (not the command): the attempt ends FAILED with this reason."""


class ImageUnavailable(ExecutorError):
    pass


class ImageInUse(ExecutorError):
    """The engine refused to remove an image: a container still needs it."""


class NameTaken(ExecutorError):
    """A container of that name exists already: this attempt was created before."""


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: str
    labels: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/job"
    network: str = "none"
    gpus: tuple[str, ...] = ()  # UUIDs of the GPUs reserved for this attempt
    simulated_gpus: bool = False  # then named in the environment only
    cpus: float | None = None
    memory_mb: int | None = None


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
        """Create the container (pulling its image if needed); returns its id. NameTaken if a
        container of `spec.name` exists: names are unique per attempt, so none starts twice."""

    def start(self, container_id: str) -> None: ...

    def wait(self, container_id: str) -> ExitStatus:
        """Block until the container exits."""

    def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; ExecutorError if the engine failed to
        (the caller tries again: the container may still run). A container gone is stopped."""

    def remove(self, container_id: str) -> None: ...

    def labelled(self, labels: Mapping[str, str]) -> list[tuple[str, Mapping[str, str]]]:
        """(id, labels) of every container, running or not, carrying all these labels."""


# -- a container's files (freight_server/services/runner/files.py) ---------------------------------

# Go's os.FileMode type bits, as the engine reports a path's mode.
_MODE_DIR = 1 << 31
_MODE_SYMLINK = 1 << 27


class PathNotFound(ExecutorError):
    pass


@dataclass(frozen=True)
class PathStat:
    name: str
    size: int
    mode: int  # the engine's FileMode: type bits high, permissions low
    modified: str  # RFC 3339
    link_target: str = ""

    @property
    def type(self) -> str:
        if self.mode & _MODE_DIR:
            return "dir"
        if self.mode & _MODE_SYMLINK:
            return "symlink"
        return "file" if self.mode >> 16 == 0 else "other"


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "changed", "added" or "deleted" since the image
    # Whether what an added directory holds is listed too, as the engine's diff does; not a
    # volume's, whose contents the diff never looks into.
    contents_listed: bool = True


CHANGE_KINDS = {0: "changed", 1: "added", 2: "deleted"}


class Archive(Protocol):
    """A tar stream of a path in a container; close it if not read to the end."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@runtime_checkable
class ContainerFiles(Protocol):
    """An executor whose containers' files can be read and written (Docker's can; the local
    executor's attempt directories stand in for a container's file system)."""

    def put_archive(self, container_id: str, path: str, data: Iterable[bytes]) -> None:
        """Extract a tar stream under `path`, making missing parent directories."""

    def stat(self, container_id: str, path: str) -> PathStat:
        """Raises PathNotFound."""

    def read_archive(self, container_id: str, path: str) -> Archive:
        """A tar stream of `path` (a directory with everything in it); raises PathNotFound."""

    def changes(self, container_id: str) -> list[Change]:
        """What the container created, changed or deleted in its image's file system."""

    def output(self, container_id: str, stream: str) -> Iterator[bytes]:
        """Everything the container wrote so far to `stream` ("stdout" or "stderr")."""

    def follow_output(self, container_id: str) -> Iterator[tuple[int, bytes]]:
        """What the container writes, from the start, as it writes it until it exits: (1 for
        stdout or 2 for stderr, bytes), in order."""

    def attach_output(self, container_id: str) -> Attached | None:
        """Asked before the container starts: what it will write, as `follow_output` gives it
        but handed over as the engine copies it rather than read back from the engine's log;
        None where following costs no more."""


class Attached(Protocol):
    """A container's writes from its start, to iterate once; closed if it is not read."""

    def __iter__(self) -> Iterator[tuple[int, bytes]]: ...

    def close(self) -> None: ...


# -- what a job may touch (docs/security.md) ---------------------------------------------------

# The capabilities a job keeps; every other is dropped, among them Docker's default NET_RAW (raw
# sockets: spoofing, sniffing), MKNOD (device nodes), SYS_CHROOT, SETPCAP, SETFCAP (granting
# file capabilities), FSETID, AUDIT_WRITE and NET_BIND_SERVICE. What is kept is what ordinary
# commands run as root in an image expect, and none reaches past the container:
KEPT_CAPABILITIES = (
    "CHOWN",  # chown what it created: package managers, `tar -x` and `cp -a` as root
    "DAC_OVERRIDE",  # root reads and writes its files whatever their mode, as images assume
    "FOWNER",  # chmod and touch files it does not own (pip, tar, cp -p)
    "SETUID",  # switch to another user (su, gosu, apt's sandbox); a setuid program gains
    "SETGID",  # nothing under no-new-privileges
    "KILL",  # signal its own processes that run as another user
)
# Scratch space under a read-only root; charged to the job's memory limit like any tmpfs.
TMPFS_OPTIONS = "rw,nosuid,nodev"


@dataclass(frozen=True)
class Confinement:
    """How every job's container is held in (FREIGHT_JOB_*). The defaults are the safe ones."""

    pids_limit: int = 4096  # processes and threads: a fork bomb stops here
    default_memory_mb: int = 4096  # for a job that names none; 0: no limit
    read_only: bool = False  # a read-only root file system; the workdir and /tmp stay writable

    @classmethod
    def from_settings(cls, settings: Settings) -> Confinement:
        return cls(
            pids_limit=settings.job_pids_limit,
            default_memory_mb=settings.job_default_memory_mb,
            read_only=settings.job_read_only,
        )

    def host_options(self) -> dict[str, Any]:
        """The host config that holds a job in. No bind mount is ever made: nothing of the
        host's file system, the Docker socket least of all, is reachable from a job."""
        options: dict[str, Any] = {
            "cap_drop": ["ALL"],
            "cap_add": list(KEPT_CAPABILITIES),
            "security_opt": ["no-new-privileges:true"],
            "pids_limit": self.pids_limit,
            "privileged": False,
        }
        if self.read_only:
            options |= {"read_only": True, "tmpfs": {"/tmp": TMPFS_OPTIONS}}
        return options

    def writable_volumes(self, spec: ContainerSpec) -> list[str]:
        """Anonymous volumes (removed with the container): the workdir, under a read-only root."""
        return [spec.workdir] if self.read_only else []

    def limited(self, spec: ContainerSpec) -> ContainerSpec:
        if spec.memory_mb or not self.default_memory_mb:
            return spec
        return replace(spec, memory_mb=self.default_memory_mb)


class DockerExecutor:
    def __init__(
        self,
        client: docker.DockerClient,
        confinement: Confinement | None = None,
        on_pull: Callable[[str], None] | None = None,
    ):
        self._client = client
        self._api = client.api
        self._confinement = confinement or Confinement()
        self._on_pull = on_pull  # told each image pulled: those are the runner's to prune
        # An exited container's inspection is final: kept from `wait` for `changes`, until removal.
        self._exited: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_env(
        cls,
        pool_size: int = 32,
        confinement: Confinement | None = None,
        on_pull: Callable[[str], None] | None = None,
    ) -> DockerExecutor:
        try:
            client = docker.from_env(max_pool_size=pool_size)
            _tune_for_local_socket(client.api, pool_size)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise ExecutorError(
                f"cannot reach the Docker engine ({exc}); start dockerd or set DOCKER_HOST"
            ) from None
        return cls(client, confinement, on_pull)

    def find(self, name: str) -> ContainerState | None:
        try:
            info = self._api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not look for container {name}: {_explain(exc)}") from None
        return ContainerState(info["Id"], info["State"]["Status"] != "created")

    def create(self, spec: ContainerSpec) -> str:
        try:
            return self._create(spec)
        except docker.errors.ImageNotFound:
            pass  # pulled only when missing: no look at the image on every create
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise NameTaken(f"container {spec.name} exists") from None
            raise ExecutorError(f"could not create the container: {_explain(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise ExecutorError(f"could not create the container: {_explain(exc)}") from None
        self._pull(spec.image)
        return self._call("create the container", self._create, spec)

    def _create(self, spec: ContainerSpec) -> str:
        confinement = self._confinement
        spec = confinement.limited(spec)
        container = self._api.create_container(
            spec.image,
            ["sh", "-c", spec.command],
            name=spec.name,
            labels=dict(spec.labels),
            environment={**spec.env, **gpu_environment(spec)},
            working_dir=spec.workdir,
            volumes=confinement.writable_volumes(spec) or None,
            # An init process forwards SIGTERM to the command and reaps its children.
            host_config=self._api.create_host_config(
                network_mode=spec.network,
                init=True,
                **resource_limits(spec),
                **confinement.host_options(),
            ),
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
        inspected = self._exited[container_id] = self._inspect(container_id)
        exit_code = int(result.get("StatusCode", -1))
        oom_killed = bool(inspected["State"].get("OOMKilled")) or (
            exit_code == SIGKILLED and self._oom_reported(container_id, inspected)
        )
        return ExitStatus(exit_code, oom_killed)

    def _oom_reported(self, container_id: str, inspected: dict[str, Any]) -> bool:
        """Whether the engine told of a kill by the kernel's OOM killer in its events. Under
        load, Docker 20.10 can hear of the kill after the exit (`die`, then `oom`) and never set
        State.OOMKilled (1 container in 60 killed so, measured with the CPUs busy): a SIGKILL under
        a memory limit is looked up there too, for a moment, rather than ending the job with a
        bare exit code 137."""
        if not (inspected.get("HostConfig") or {}).get("Memory"):
            return False
        since = _unix_seconds(inspected["State"].get("StartedAt")) or time.time() - 86_400
        for attempt in range(OOM_EVENT_TRIES):
            if attempt:
                time.sleep(OOM_EVENT_WAIT)
            try:
                events = self._api.events(
                    since=f"{since:.0f}",
                    until=f"{time.time():.9f}",  # what happened so far, without waiting for more
                    filters={"container": container_id, "event": "oom"},
                    decode=True,
                )
                if any(True for _ in events):
                    return True
            except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                log.warning("could not read the engine's events of %s: %s", container_id[:12], exc)
                return False
        return False

    def stop(self, container_id: str, grace: float) -> None:
        try:
            self._api.stop(container_id, timeout=max(0, round(grace)))
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not stop {container_id[:12]}: {_explain(exc)}") from None

    def remove(self, container_id: str) -> None:
        self._exited.pop(container_id, None)
        try:
            # With its anonymous volumes (the workdir under a read-only root, an image's VOLUMEs).
            self._api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            log.warning("could not remove %s: %s", container_id[:12], _explain(exc))

    # -- ContainerFiles ----------------------------------------------------------------------

    def labelled(self, labels: Mapping[str, str]) -> list[tuple[str, Mapping[str, str]]]:
        containers = self._call(
            "list containers",
            self._api.containers,
            all=True,
            filters={"label": [f"{k}={v}" for k, v in labels.items()]},
        )
        return [(c["Id"], c.get("Labels") or {}) for c in containers]

    def put_archive(self, container_id: str, path: str, data: Iterable[bytes]) -> None:
        self._call("put files into the container", self._api.put_archive, container_id, path, data)

    def stat(self, container_id: str, path: str) -> PathStat:
        url = self._api._url("/containers/{0}/archive", container_id)
        try:
            response = self._api.head(url, params={"path": path}, timeout=60)
        except requests.exceptions.RequestException as exc:
            raise ExecutorError(f"could not look at {path}: {exc}") from None
        if response.status_code == 404:
            raise PathNotFound(f"no {path} in the container")
        header = response.headers.get("X-Docker-Container-Path-Stat")
        if response.status_code != 200 or not header:
            raise ExecutorError(f"could not look at {path}: HTTP {response.status_code}")
        stat = json.loads(base64.b64decode(header))
        return PathStat(
            stat["name"], int(stat["size"]), int(stat["mode"]), stat["mtime"], stat["linkTarget"]
        )

    def read_archive(self, container_id: str, path: str) -> Archive:
        url = self._api._url("/containers/{0}/archive", container_id)
        try:
            response = self._api._get(
                url, params={"path": path}, stream=True, headers={"Accept-Encoding": "identity"}
            )
        except requests.exceptions.RequestException as exc:
            raise ExecutorError(f"could not read {path}: {exc}") from None
        if response.status_code == 404:
            response.close()
            raise PathNotFound(f"no {path} in the container")
        if response.status_code != 200:
            response.close()
            raise ExecutorError(f"could not read {path}: HTTP {response.status_code}")
        return _ResponseArchive(response)

    def changes(self, container_id: str) -> list[Change]:
        changes = self._call("list the container's changes", self._api.diff, container_id)
        found = [Change(c["Path"], CHANGE_KINDS.get(c["Kind"], "changed")) for c in changes or ()]
        # The engine's diff never looks inside a volume: the job's volumes (its workdir under a
        # read-only root, an image's VOLUMEs) were made for it, so all they hold is its own.
        inspected = self._exited.get(container_id) or self._inspect(container_id)
        mounts = inspected.get("Mounts") or ()
        volumes = {m["Destination"] for m in mounts if m.get("Type") == "volume"}
        found = [c for c in found if c.path not in volumes]
        return found + [Change(path, "added", contents_listed=False) for path in sorted(volumes)]

    def output(self, container_id: str, stream: str) -> Iterator[bytes]:
        frames = self._call(
            f"read the container's {stream}",
            self._api.logs,
            container_id,
            stdout=stream == "stdout",
            stderr=stream == "stderr",
            stream=True,
            follow=False,
        )
        try:
            yield from frames
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not read the container's {stream}: {exc}") from None

    def follow_output(self, container_id: str) -> Iterator[tuple[int, bytes]]:
        last: Moment | None = None
        for piece in self._logged_output(container_id, follow=True, after=None):
            last = piece.at
            yield piece.stream, piece.data
        # The engine's stream can end before the container's last partial line is in its log:
        # ask once more for whatever it logged after the last write we had.
        for piece in self._logged_output(container_id, follow=False, after=last):
            yield piece.stream, piece.data

    def attach_output(self, container_id: str) -> Attached:
        # The engine's log, read back, is decoded from JSON line by line and framed again: for a
        # job that prints a lot, that costs the engine more CPU than the job itself. Attached,
        # the engine copies each write to us as it copies it to the log.
        url = self._api._url("/containers/{0}/attach", container_id)
        params = {"stdout": 1, "stderr": 1, "stream": 1, "logs": 0}
        upgrade = {"Connection": "Upgrade", "Upgrade": "tcp"}
        try:
            response = self._api._post(
                url, params=params, headers=upgrade, stream=True, timeout=None
            )
            self._api._raise_for_status(response)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not attach to the container: {_explain(exc)}") from None
        return _Attached(response)

    def _logged_output(
        self, container_id: str, follow: bool, after: Moment | None
    ) -> Iterator[OutputPiece]:
        url = self._api._url("/containers/{0}/logs", container_id)
        params: dict[str, Any] = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": 1}
        if after is not None:
            params["since"] = f"{after[0]}.{after[1]:09d}"
        try:
            response = self._api._get(url, params=params, stream=True, timeout=None)
            self._api._raise_for_status(response)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ExecutorError(f"could not follow the container's output: {exc}") from None
        try:
            yield from read_output(response, after)
        except (OSError, requests.exceptions.RequestException, ValueError) as exc:
            raise ExecutorError(f"lost the container's output: {exc}") from None
        finally:
            response.close()

    def _pull(self, image: str) -> None:
        log.info("pulling image %s", image)
        try:
            self._client.images.pull(image)
        except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
            raise ImageUnavailable(f"image {image!r} is not available: {_explain(exc)}") from None
        if self._on_pull is not None:
            self._on_pull(image)

    # -- images (freight_server/services/runner/images.py) -----------------------------------------

    def images_in_use(self) -> set[str]:
        containers = self._call("list containers", self._api.containers, all=True)
        return {c["Image"] for c in containers} | {c["ImageID"] for c in containers}

    def remove_image(self, image: str) -> None:
        try:
            # Never forced: the engine keeps an image that a container still needs.
            self._api.remove_image(image)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise ImageInUse(f"image {image} is in use: {_explain(exc)}") from None
            raise ExecutorError(f"could not remove image {image}: {_explain(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise ExecutorError(f"could not remove image {image}: {exc}") from None

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


class _SharedPool(UnixHTTPAdapter):  # type: ignore[misc]
    """docker-py keeps a connection pool per request URL, and each container has its own URLs:
    every call to the engine opened (and later closed) a socket. One pool for them all."""

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        return super().get_connection("http+docker://localhost", proxies)


def _tune_for_local_socket(api: docker.APIClient, pool_size: int) -> None:
    adapter = api.adapters.get("http+docker://")
    if isinstance(adapter, UnixHTTPAdapter):  # a TCP engine goes through requests' own pools
        shared = _SharedPool(
            f"http+unix://{adapter.socket_path}", adapter.timeout, max_pool_size=pool_size
        )
        api.mount("http+docker://", shared)
        # A local socket has no proxy and no netrc, but requests looked both up (the proxy
        # variables, ~/.netrc) on every call: 9 % of the runner's CPU with Docker's jobs.
        api.trust_env = False


def resource_limits(spec: ContainerSpec) -> dict[str, Any]:
    """The host config for `--cpus`, `--memory` with `--memory-swap` the same (no extra swap),
    and `--gpus '"device=UUID1,UUID2"'`: a device request for those GPUs, capability `gpu`."""
    limits: dict[str, Any] = {}
    if spec.cpus:
        limits["nano_cpus"] = round(spec.cpus * 1e9)
    if spec.memory_mb:
        limits["mem_limit"] = limits["memswap_limit"] = spec.memory_mb * MIB
    if spec.gpus and not spec.simulated_gpus:
        limits["device_requests"] = [
            docker.types.DeviceRequest(device_ids=list(spec.gpus), capabilities=[["gpu"]])
        ]
    return limits


def gpu_environment(spec: ContainerSpec) -> dict[str, str]:
    """Real GPUs are named by the device request (the NVIDIA runtime sets the environment);
    simulated ones only here, since an engine without that runtime refuses a device request.
    A job without GPUs gets an empty list: none of the host's, even under the NVIDIA runtime."""
    if spec.gpus and not spec.simulated_gpus:
        return {}
    return visible_devices(spec.gpus)


class _ResponseArchive:
    """The engine's tar stream; closing it drops the HTTP response (and so the engine's work)."""

    def __init__(self, response: requests.Response):
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._response.iter_content(1024 * 1024)
        except requests.exceptions.RequestException as exc:
            raise ExecutorError(f"lost the container's archive stream: {exc}") from None
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()


def _unix_seconds(stamp: str | None) -> int | None:
    """The whole seconds of the engine's RFC 3339 time; None for its zero time or none."""
    try:
        seconds = moment_of((stamp or "").encode())[0]
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _explain(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)


class _Attached:
    """The engine's attach connection, read as (stream, bytes) pieces; closed once read."""

    def __init__(self, response: Any):
        self._response = response

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        try:
            for piece in read_attached(self._response):
                yield piece.stream, piece.data
        except (OSError, requests.exceptions.RequestException, ValueError) as exc:
            raise ExecutorError(f"lost the container's output: {exc}") from None
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()
