"""`FREIGHT_RUNNER_EXECUTOR=local`: each attempt's command as a subprocess in its own directory,
for GPU hosts where Docker is not allowed. It keeps the Docker executor's contract: one name per
attempt, started at most once, found again after a runner restart, stopped with SIGTERM then
SIGKILL after the grace; and its files can be put in and read out like a container's.

An attempt's directory, `<root>/<name>/`, holds `spec.json` (written by create), `started`
(written before the process exists, so a restart never starts it twice), `pid` (with the
process's start time, so a reused pid is not mistaken for it; `wrapper_pid` is the wrapper's
own record, should the runner die before writing it), `exit_code`, `output` (stdout and stderr,
framed in the order written), and `root/`, which stands for the job's file system. Its working
directory is `root/<workdir>` (`root/job`), so relative paths work as in a container; an
absolute input path such as `/data/x` lands at `root/data/x`. The command runs under a small
wrapper process that records its output and exit code, so both outlive the runner that started
it.

There is no image, no isolation from the host, and `cpus`/`memory` are counted by the scheduler
but not enforced.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import shutil
import signal
import stat as stat_module
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from freight_server.services.runner.executor import (
    Change,
    ContainerSpec,
    ContainerState,
    ExecutorError,
    ExitStatus,
    NameTaken,
    PathNotFound,
    PathStat,
)
from freight_server.services.runner.gpus import visible_devices

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHUNK = 64 * 1024

# The wrapper: a small Python process (isolated from the job's PYTHON* variables, without `site`,
# importing nothing beyond what the interpreter has built in: it starts in a few milliseconds) that
# runs the command, frames what it writes to stdout and stderr into `output` in the order it is
# read (one byte for the stream, 1 or 2, four for the length, then the bytes, as the Docker engine
# frames its logs), and records its exit code, so that all of it outlives the runner that started
# it. Its signal handlers are not the command's: SIGTERM reaches the command, the wrapper stays to
# record.
WRAPPER = """
import os, select, signal, sys

attempt, command = sys.argv[1], sys.argv[2]


def record(name, text):
    path = os.path.join(attempt, name)
    with open(path + ".tmp", "w") as out:
        out.write(text)
    os.replace(path + ".tmp", path)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


record("wrapper_pid", str(os.getpid()))
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, lambda *_: None)
out_read, out_write = os.pipe()
err_read, err_write = os.pipe()
child = os.posix_spawnp(
    "sh",
    ["sh", "-c", command],
    os.environ,
    file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out_write, 1),
        (os.POSIX_SPAWN_DUP2, err_write, 2),
    ],
    setsigdef=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ),
)
os.close(out_write)
os.close(err_write)
streams = {out_read: 1, err_read: 2}
poller = select.poll()
for fd in streams:
    poller.register(fd, select.POLLIN)
output = os.open(os.path.join(attempt, "output"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
code = None
# Until the command ends; then what it left in the pipes (a background process that keeps them
# open is no reason to wait: it is killed when the attempt is removed).
while streams:
    if code is None:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
    ready = poller.poll(0 if code is not None else 200)
    if code is not None and not ready:
        break
    for fd, _ in ready:
        data = os.read(fd, 65536)
        if not data:
            poller.unregister(fd)
            del streams[fd]
            continue
        write_all(output, bytes([streams[fd]]) + len(data).to_bytes(4, "big") + data)
if code is None:
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
code = 128 - code if code < 0 else code
record("exit_code", str(code))
sys.exit(code)
"""
KILLED = 128 + signal.SIGKILL  # the status of a process that left no code of its own

# Go's os.FileMode type bits, as the Docker engine reports a path's mode (executor.PathStat).
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26


class LocalExecutor:
    def __init__(self, root: Path, poll_interval: float = 0.1):
        self._root = root.resolve()
        self._poll = poll_interval
        # Processes this runner started; one adopted after a restart is watched by its pid.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- Executor ----------------------------------------------------------------------------

    def find(self, name: str) -> ContainerState | None:
        attempt = self._dir(name)
        if not (attempt / "spec.json").exists():
            return None
        return ContainerState(name, (attempt / "started").exists())

    def create(self, spec: ContainerSpec) -> str:
        attempt = self._dir(spec.name)
        if (attempt / "spec.json").exists():
            raise NameTaken(f"attempt {spec.name} exists")
        if spec.cpus or spec.memory_mb:
            log.info("%s: cpus and memory are not enforced by the local executor", spec.name)
        workdir = posixpath.normpath("/" + spec.workdir)
        try:
            # 0700: spec.json holds the job's environment.
            attempt.mkdir(parents=True, exist_ok=True, mode=0o700)
            (attempt / "root" / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            spec_json = {
                "command": spec.command,
                "env": _environment(spec),
                "workdir": workdir,
                "labels": dict(spec.labels),
            }
            _write_atomic(attempt / "spec.json", json.dumps(spec_json))
        except OSError as exc:
            raise ExecutorError(f"could not prepare {attempt}: {exc}") from None
        return spec.name

    def start(self, container_id: str) -> None:
        attempt = self._dir(container_id)
        try:
            spec = json.loads((attempt / "spec.json").read_text())
            _write_atomic(attempt / "started", "")
            (attempt / "output").touch()
            with open(attempt / "wrapper.log", "ab") as wrapper_log:
                child = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", WRAPPER, str(attempt), spec["command"]],
                    cwd=self.work_dir(container_id),
                    env=spec["env"],
                    stdin=subprocess.DEVNULL,
                    stdout=wrapper_log,  # the wrapper's own troubles, should it have any
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a stop reaches all of it
                )
            self._children[container_id] = child
            _write_atomic(attempt / "pid", f"{child.pid} {_started_at(child.pid) or ''}")
        except (OSError, ValueError, KeyError) as exc:
            raise ExecutorError(f"could not start the command: {exc}") from None

    def wait(self, container_id: str) -> ExitStatus:
        child = self._children.get(container_id)
        if child is not None:
            returncode = child.wait()
            recorded = self._recorded_exit(container_id)
            if recorded is not None:
                return ExitStatus(recorded)
            return ExitStatus(128 - returncode if returncode < 0 else returncode)
        # Adopted after a restart: not our child, so its end is seen by polling its pid.
        while self._alive(container_id):
            time.sleep(self._poll)
        recorded = self._recorded_exit(container_id)
        return ExitStatus(KILLED if recorded is None else recorded)

    def stop(self, container_id: str, grace: float) -> None:
        pid = self._pid(container_id)
        if pid is None or not _signal_group(pid, signal.SIGTERM):
            return
        deadline = time.monotonic() + grace
        while self._alive(container_id) and time.monotonic() < deadline:
            time.sleep(min(self._poll, 0.05))
        # Whatever is left of the group, the wrapper included, as `docker stop` would.
        _signal_group(pid, signal.SIGKILL)

    def remove(self, container_id: str) -> None:
        pid = self._pid(container_id)
        if pid is not None:
            # The command's own background children die with it, as in a container.
            _signal_group(pid, signal.SIGKILL)
        child = self._children.pop(container_id, None)
        if child is not None:
            try:
                child.wait(timeout=5)  # reaped, not left a zombie
            except subprocess.TimeoutExpired:
                log.warning("%s: the command did not die on SIGKILL", container_id)
        shutil.rmtree(self._dir(container_id), ignore_errors=True)

    def labelled(self, labels: Mapping[str, str]) -> list[tuple[str, Mapping[str, str]]]:
        found = []
        for spec_file in self._root.glob("*/spec.json"):
            try:
                own = json.loads(spec_file.read_text()).get("labels") or {}
            except (OSError, ValueError):
                continue
            if all(own.get(k) == v for k, v in labels.items()):
                found.append((spec_file.parent.name, own))
        return found

    def work_dir(self, container_id: str) -> Path:
        """The command's working directory (`root/job`): where relative paths lead."""
        try:
            spec = json.loads((self._dir(container_id) / "spec.json").read_text())
            workdir = str(spec["workdir"])
        except (OSError, ValueError, KeyError):
            workdir = "/job"
        return self._dir(container_id) / "root" / workdir.lstrip("/")

    # -- ContainerFiles: the attempt's `root/` stands for the container's file system --------

    def put_archive(self, container_id: str, path: str, data: Iterable[bytes]) -> None:
        target = self._host_path(container_id, path)
        try:
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=_ChunkReader(data), mode="r|") as tar:
                # The "data" filter refuses absolute names, `..`, and links out of the root.
                tar.extractall(target, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise ExecutorError(f"could not put files at {path}: {exc}") from None

    def stat(self, container_id: str, path: str) -> PathStat:
        host = self._host_path(container_id, path)
        try:
            found = os.lstat(host)
            target = os.readlink(host) if stat_module.S_ISLNK(found.st_mode) else ""
        except FileNotFoundError:
            raise PathNotFound(f"no {path} in the job") from None
        except OSError as exc:
            raise ExecutorError(f"could not look at {path}: {exc}") from None
        modified = datetime.fromtimestamp(found.st_mtime, UTC).isoformat()
        return PathStat(host.name or "/", found.st_size, _go_mode(found.st_mode), modified, target)

    def read_archive(self, container_id: str, path: str) -> _TarStream:
        host = self._host_path(container_id, path)
        if not os.path.lexists(host):
            raise PathNotFound(f"no {path} in the job")
        return _TarStream(host, posixpath.basename(posixpath.normpath("/" + path)) or ".")

    def changes(self, container_id: str) -> list[Change]:
        """Everything under the root, as added: the root began empty, as a container's paths
        beyond its image do (its inputs too, as the Docker engine reports them)."""
        root = self._dir(container_id) / "root"
        found = []
        for parent, dirs, files in os.walk(root):
            for name in dirs + files:
                relative = os.path.relpath(os.path.join(parent, name), root)
                found.append(Change("/" + relative.replace(os.sep, "/"), "added"))
        return found

    def output(self, container_id: str, stream: str) -> Iterator[bytes]:
        wanted = {"stdout": 1, "stderr": 2}.get(stream)
        if wanted is None:
            raise ExecutorError(f"no such stream {stream!r}")
        for number, data in self._frames(container_id, follow=False):
            if number == wanted:
                yield data

    def follow_output(self, container_id: str) -> Iterator[tuple[int, bytes]]:
        return self._frames(container_id, follow=True)

    def attach_output(self, container_id: str) -> None:
        return None  # the wrapper writes the output file as the command writes: followed

    def _frames(self, container_id: str, follow: bool) -> Iterator[tuple[int, bytes]]:
        """The command's writes as the wrapper framed them, in order; when following, until
        the wrapper has ended and everything it wrote has been read."""
        try:
            source = open(self._dir(container_id) / "output", "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with source:
            pending = b""
            while True:
                ended = not follow or not self._alive(container_id)
                chunk = source.read(CHUNK)
                if chunk:
                    pending += chunk
                    while len(pending) >= 5 and len(pending) >= 5 + _frame_length(pending):
                        size = _frame_length(pending)
                        yield pending[0], pending[5 : 5 + size]
                        pending = pending[5 + size :]
                    continue
                if ended:
                    return
                time.sleep(self._poll)

    # -- the attempt's own files -------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        if not SAFE_NAME.match(name):
            raise ExecutorError(f"invalid attempt name {name!r}")
        return self._root / name

    def _host_path(self, container_id: str, path: str) -> Path:
        """Where a path of the job's lies under its root. A symlink the job made on the way
        must not lead outside it: such a path is not found."""
        root = (self._dir(container_id) / "root").resolve()
        relative = posixpath.normpath("/" + path).lstrip("/")  # normpath drops leading `..`
        host = root / relative if relative else root
        if host != root:
            parent = host.parent.resolve()
            if parent != root and root not in parent.parents:
                raise PathNotFound(f"no {path} in the job")
        return host

    def _pid(self, container_id: str) -> int | None:
        child = self._children.get(container_id)
        if child is not None:
            return child.pid
        recorded = _read_fields(self._dir(container_id) / "pid")
        if recorded:
            return int(recorded[0])
        return _read_int(self._dir(container_id) / "wrapper_pid")

    def _recorded_exit(self, container_id: str) -> int | None:
        return _read_int(self._dir(container_id) / "exit_code")

    def _alive(self, container_id: str) -> bool:
        """Whether the wrapper still runs: its pid, with the start time it had, so that a pid
        reused by another process since is not taken for it."""
        child = self._children.get(container_id)
        if child is not None:
            return child.poll() is None
        pid = self._pid(container_id)
        if pid is None:
            return False
        started = _started_at(pid)
        recorded = _read_fields(self._dir(container_id) / "pid")[1:]
        return started is not None and (not recorded or recorded[0] == started)


class _TarStream:
    """A tar of a path, written by a thread into a pipe while it is read: a big file is never
    held whole in memory. Closing it early ends the writer (a broken pipe)."""

    def __init__(self, source: Path, name: str):
        read_end, write_end = os.pipe()
        self._reader = os.fdopen(read_end, "rb")
        writer = os.fdopen(write_end, "wb")
        threading.Thread(
            target=_write_tar, args=(writer, source, name), name="local-tar", daemon=True
        ).start()

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._reader.read(CHUNK):
            yield chunk

    def close(self) -> None:
        self._reader.close()


def _write_tar(writer: BinaryIO, source: Path, name: str) -> None:
    try:
        with writer, tarfile.open(fileobj=writer, mode="w|") as tar:
            tar.add(source, arcname=name)  # symlinks as links, never followed
    except OSError as exc:  # the reader left, or a file went away under a running job
        log.debug("archive of %s ended early: %s", source, exc)


class _ChunkReader(io.RawIOBase):
    """An iterable of chunks as a file, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterable[bytes]):
        # Whole bytes are one chunk (iterating them would give ints), as the engine takes both.
        self._chunks = iter([chunks] if isinstance(chunks, bytes | bytearray) else chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _frame_length(frame: bytes) -> int:
    return int.from_bytes(frame[1:5], "big")


def _go_mode(mode: int) -> int:
    permissions = mode & 0o777
    if stat_module.S_ISDIR(mode):
        return permissions | GO_MODE_DIR
    if stat_module.S_ISLNK(mode):
        return permissions | GO_MODE_SYMLINK
    if stat_module.S_ISREG(mode):
        return permissions
    return permissions | GO_MODE_DEVICE


def _environment(spec: ContainerSpec) -> dict[str, str]:
    """The runner's environment without Freight's own settings (they hold credentials), the
    job's variables, and exactly the GPUs it was given (an empty list hides the rest)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FREIGHT_")}
    return {**inherited, **spec.env, **visible_devices(spec.gpus)}


def _signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _started_at(pid: int) -> str | None:
    """A live process's start time (in clock ticks since boot), from /proc; None for none, or
    for a zombie."""
    try:
        # The command name, in parentheses, may hold spaces: the fields follow its last ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    state, start_time = fields[0], fields[19]  # stat's 3rd and 22nd fields
    return None if state == "Z" else start_time


def _read_fields(path: Path) -> list[str]:
    try:
        fields = path.read_text().split()
    except OSError:
        return []
    return fields if fields and fields[0].isdigit() else []


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text)
    partial.replace(path)
