"""`FREIGHT_RUNNER_EXECUTOR=local`: each attempt's command as a subprocess in its own directory,
for GPU hosts where Docker is not allowed. It keeps the Docker executor's contract: one name per
attempt, started at most once, found again after a runner restart, stopped with SIGTERM then
SIGKILL after the grace; and its files can be put in and read out like a container's.

An attempt's directory, `<root>/<name>/`, holds `spec.json` (written by create), `started`
(written before the process exists, so a restart never starts it twice), `pid` (the command's
and its supervisor's, each with its start time, so a reused pid is not mistaken for either),
`exit_code`, `output` (stdout and stderr, framed in the order written), and `root/`, which
stands for the job's file system. Its working directory is `root/<workdir>` (`root/job`), so
relative paths work as in a container; an absolute input path such as `/data/x` lands at
`root/data/x`. The runner's commands are started by one supervisor process (supervisor.py) that
records their output and exit codes, so both outlive the runner that started them.

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
from freight_server.services.runner.supervisor import started_at

log = logging.getLogger(__name__)

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CHUNK = 64 * 1024

# The process that starts this runner's commands and records their output and exit codes
# (supervisor.py): one for the runner's life, so a command costs no interpreter of its own.
SUPERVISOR = Path(__file__).with_name("supervisor.py")
REPLY_WAIT = 30.0  # seconds for the supervisor to say a command runs
KILLED = 128 + signal.SIGKILL  # the status of a process that left no code of its own

# Go's os.FileMode type bits, as the Docker engine reports a path's mode (executor.PathStat).
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26


class LocalExecutor:
    def __init__(self, root: Path, poll_interval: float = 0.1):
        self._root = root.resolve()
        self._poll = poll_interval
        # Commands this runner started; one adopted after a restart is watched by its pid.
        self._commands: dict[str, _Command] = {}
        self._supervisor: _Supervisor | None = None
        self._lock = threading.Lock()

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
            request = {
                "name": container_id,
                "dir": str(attempt),
                "command": spec["command"],
                "env": spec["env"],
                "cwd": str(self.work_dir(container_id)),
            }
        except (OSError, ValueError, KeyError) as exc:
            raise ExecutorError(f"could not start the command: {exc}") from None
        self._commands[container_id] = self._running_supervisor().start(request)

    def _running_supervisor(self) -> _Supervisor:
        with self._lock:
            if self._supervisor is None or not self._supervisor.alive:
                self._supervisor = _Supervisor(self._root)
            return self._supervisor

    def wait(self, container_id: str) -> ExitStatus:
        command = self._commands.get(container_id)
        if command is not None:
            command.ended.wait()
            if command.exit_code is not None:
                return ExitStatus(command.exit_code)
        # Adopted after a restart, or its supervisor died: its end is seen by polling its pid.
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
        # Whatever is left of its session, as `docker stop` would.
        _signal_group(pid, signal.SIGKILL)

    def remove(self, container_id: str) -> None:
        pid = self._pid(container_id)
        if pid is not None:
            # The command's own background children die with it, as in a container.
            _signal_group(pid, signal.SIGKILL)
        command = self._commands.pop(container_id, None)
        if command is not None and not command.ended.wait(timeout=5):  # its exit recorded
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
        return None  # the supervisor writes the output file as the command writes: followed

    def _frames(self, container_id: str, follow: bool) -> Iterator[tuple[int, bytes]]:
        """The command's writes as the supervisor framed them, in order; when following, until
        the command has ended and everything it wrote has been read."""
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
        command = self._commands.get(container_id)
        if command is not None and command.pid is not None:
            return command.pid
        recorded = _read_fields(self._dir(container_id) / "pid")
        return int(recorded[0]) if recorded else None

    def _recorded_exit(self, container_id: str) -> int | None:
        return _read_int(self._dir(container_id) / "exit_code")

    def _alive(self, container_id: str) -> bool:
        """Whether the command still runs, or its supervisor is still recording its end: each
        by its pid with the start time it had, so that a pid reused since is not taken for it."""
        command = self._commands.get(container_id)
        if command is not None and not command.lost:
            return not command.ended.is_set()
        recorded = _read_fields(self._dir(container_id) / "pid")
        if not recorded:
            return False
        pid, started, *supervisor = recorded
        if started_at(int(pid)) == started:
            return True
        if len(supervisor) == 2 and self._recorded_exit(container_id) is None:
            return started_at(int(supervisor[0])) == supervisor[1]
        return False


class _Command:
    """A command started through this runner's supervisor, as its replies tell."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.error: str | None = None
        self.exit_code: int | None = None
        self.lost = False  # the supervisor died first: its end is the attempt's files' to tell
        self.replied = threading.Event()
        self.ended = threading.Event()


class _Supervisor:
    """The runner's end of supervisor.py: a request a line written to its stdin, its replies
    read by a thread. Started in a session of its own, it outlives the runner (and a Ctrl-C
    meant for it), and ends once its last command has."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(root / "supervisor.log", "ab") as troubles:
            self._process = subprocess.Popen(
                [sys.executable, "-I", str(SUPERVISOR)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=troubles,
                cwd="/",
                start_new_session=True,
            )
        self.alive = True
        self._lock = threading.Lock()
        self._commands: dict[str, _Command] = {}
        threading.Thread(target=self._read, name="local-supervisor", daemon=True).start()

    def start(self, request: dict[str, Any]) -> _Command:
        command = _Command()
        line = (json.dumps(request) + "\n").encode()
        with self._lock:
            if not self.alive:
                raise ExecutorError("the local supervisor is gone; the next start begins another")
            self._commands[request["name"]] = command
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(line)
                self._process.stdin.flush()
            except OSError as exc:
                self._commands.pop(request["name"], None)
                raise ExecutorError(f"could not reach the local supervisor: {exc}") from None
        if not command.replied.wait(REPLY_WAIT):
            raise ExecutorError(f"the local supervisor did not start it in {REPLY_WAIT:.0f}s")
        if command.error is not None:
            raise ExecutorError(f"could not start the command: {command.error}")
        if command.pid is None:
            raise ExecutorError("the local supervisor ended before starting the command")
        return command

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            reply = json.loads(line)
            with self._lock:
                command = self._commands.get(reply["name"])
                if command is None:
                    continue
                if "exit_code" in reply:
                    del self._commands[reply["name"]]
                    command.exit_code = int(reply["exit_code"])
                    command.ended.set()
                    continue
            command.pid, command.error = reply.get("pid"), reply.get("error")
            if command.error is not None:
                command.ended.set()
            command.replied.set()
        self._process.wait()
        code = self._process.returncode
        log.error("the local supervisor ended (%s); its commands are lost", code)
        with self._lock:
            self.alive = False
            for command in self._commands.values():
                command.lost = True
                command.replied.set()
                command.ended.set()
            self._commands.clear()


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
