"""An attempt's files: inputs put into its container before it starts, outputs saved to the
filestore after it ends, and, while it runs, its files read live for the API.

Every byte moves between the filestore (over RabbitMQ) and the container (the engine's archive
API); none touches the runner's disk, and nothing of the host's file system is reachable.

Outputs are what the job created or changed (the engine's diff), plus its stdout and stderr as
/.freight/stdout and /.freight/stderr, up to FREIGHT_MAX_OUTPUT_BYTES: stdout and stderr first,
then files in path order; a file that does not fit is listed as skipped, with why. An input the
job left as it was (same size and time as placed) is listed with its known digest, not copied.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from freight_server.services.runner.attempt import container_name
from freight_server.services.runner.executor import (
    Archive,
    Attached,
    Change,
    ContainerFiles,
    Executor,
    ExecutorError,
    PathNotFound,
    PathStat,
)
from freight_server.services.runner.logs import AttemptLog, OutputShipper
from freight_server.services.runner.tar_reader import TarReader
from freight_server.shared import filestore_protocol as protocol
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.filestore_client import FilestoreClient
from freight_server.shared.filestore_protocol import FileEntry
from freight_server.shared.job_paths import (
    OUTPUT_DIR,
    STDERR_PATH,
    STDOUT_PATH,
    InvalidPath,
    is_reserved,
    parent_of,
    requested_path,
)
from freight_server.shared.jobs import JobView
from freight_server.shared.rpc import (
    CHUNK_BYTES,
    WINDOW,
    Conversation,
    Envelope,
    Handler,
    Node,
    NodeConfig,
    RemoteError,
    TransferError,
    read_chunks,
    send_stream,
)

log = logging.getLogger(__name__)

# Files the engine puts in every container (mount points, the init it mounts): not the job's.
ENGINE_PATHS = frozenset(
    {
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
        "/.dockerenv",
        "/sbin/docker-init",
        "/bin/docker-init",
        "/usr/sbin/docker-init",
        "/usr/bin/docker-init",
    }
)
MAX_SYMLINK_HOPS = 8
MAX_LISTING = 10_000
# Outputs this small go to the filestore together, up to SMALL_BATCH_FILES or SMALL_BATCH_BYTES
# at once (what the runner holds of them): a job that writes ten thousand files costs a few
# round trips, not ten thousand.
SMALL_FILE = 256 * 1024
SMALL_BATCH_FILES = 2000
SMALL_BATCH_BYTES = 8 * 1024 * 1024


class InputUnavailable(ExecutorError):
    """An input could not be put into the container in time: the job fails with this reason."""


@dataclass(frozen=True)
class FileLimits:
    input_deadline: float
    output_deadline: float
    max_output_bytes: int
    max_output_files: int


@dataclass
class OutputManifest:
    files: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    saved_bytes: int = 0
    error: str | None = None

    def event_data(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "skipped": self.skipped,
            "deleted": self.deleted,
            "saved_bytes": self.saved_bytes,
            "error": self.error,
        }


class AttemptFiles:
    def __init__(
        self,
        container: ContainerFiles | None,
        filestore: FilestoreClient,
        limits: FileLimits,
        workdir: str = "/job",
    ):
        self._container = container
        self._filestore = filestore
        self._limits = limits
        self._workdir = workdir
        # Threads kept for the ended containers' diffs and small outputs on their way to the
        # filestore: one started per job cost its own wait.
        self._background = ThreadPoolExecutor(thread_name_prefix="outputs")

    # -- inputs ------------------------------------------------------------------------------

    def place_inputs(self, container_id: str, job: JobView) -> None:
        """Put every input at its path in the created container, within FREIGHT_INPUT_DEADLINE."""
        if not job.files:
            return
        if self._container is None:
            raise InputUnavailable("this runner's executor cannot put input files in place")
        deadline = time.monotonic() + self._limits.input_deadline
        for wanted in job.files:
            self._place(self._container, container_id, wanted, input_mtime(job), deadline)

    def _place(
        self,
        container: ContainerFiles,
        container_id: str,
        wanted: Mapping[str, Any],
        mtime: int,
        deadline: float,
    ) -> None:
        path, digest, size = str(wanted["path"]), str(wanted["digest"]), int(wanted["size"])
        backoff = 0.2
        while True:
            try:
                patience = max(0.0, deadline - time.monotonic())
                with self._filestore.download(digest, patience) as download:
                    checked = _checked(download, digest, size, deadline, self._limits)
                    # Under the workdir, extracted there: with FREIGHT_JOB_READ_ONLY it is the one
                    # writable place, and the engine refuses to extract at a read-only "/".
                    inside = path.startswith(self._workdir.rstrip("/") + "/")
                    root = self._workdir if inside else "/"
                    archive = tar_of_one(posixpath.relpath(path, root), size, checked, mtime)
                    container.put_archive(container_id, root, archive)
                return
            except RemoteError as exc:
                if exc.code == protocol.NOT_FOUND:
                    raise InputUnavailable(
                        f"input {path} ({digest}) is not in the filestore"
                    ) from None
                error: Exception = exc
            except (TransferError, InputUnavailable) as exc:
                error = exc
            if time.monotonic() + backoff >= deadline:
                raise InputUnavailable(
                    f"input {path} could not be had within {self._limits.input_deadline:g}s "
                    f"(FREIGHT_INPUT_DEADLINE): {error}"
                )
            log.warning("input %s not placed yet (%s); retrying", path, error)
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    # -- output, live -------------------------------------------------------------------------

    def attach_output(self, container_id: str) -> Attached | None:
        """Before the container starts: its output from the engine as it is written (the
        engine's log is the way back to it after a restart); None where it cannot be."""
        if self._container is None:
            return None
        try:
            return self._container.attach_output(container_id)
        except ExecutorError as exc:
            log.warning("%s: following its log instead of attaching: %s", container_id[:12], exc)
            return None

    def ship_output(
        self,
        container_id: str,
        job: JobView,
        adopted: bool = False,
        attached: Attached | None = None,
    ) -> OutputShipper | None:
        """Start sending the started container's output to the filestore as it comes: what
        `attached` delivers, else the engine's log (after what the filestore has of it, for an
        attempt `adopted` after a restart)."""
        if self._container is None:
            return None
        attempt_log = AttemptLog(job.job_id, job.attempt)
        deadline = self._limits.output_deadline
        shipper = OutputShipper(
            self._container, self._filestore, attempt_log, deadline, adopted, attached
        )
        return shipper.start(container_id)

    def finish_output(self, shipper: OutputShipper) -> str | None:
        return shipper.finish(self._limits.output_deadline)

    # -- outputs -----------------------------------------------------------------------------

    def save_outputs(
        self, container_id: str, job: JobView, shipper: OutputShipper | None = None
    ) -> OutputManifest:
        """Save what the ended job left, within FREIGHT_OUTPUT_DEADLINE; never raises: a
        failure is the manifest's `error`. With the `shipper` of its output, that is finished
        first: the filestore then has all it printed, and makes /.freight/stdout and stderr
        of it."""
        container = self._container
        if container is None:
            return OutputManifest()
        # An exited container's changes are final: asked for while its output is closed.
        changes = self._background.submit(container.changes, container_id)
        log_complete = shipper is not None and self.finish_output(shipper) is None
        printed = not (log_complete and shipper is not None and shipper.wrote_nothing)
        return self._save_outputs(container, container_id, job, log_complete, printed, changes)

    def _save_outputs(
        self,
        container: ContainerFiles,
        container_id: str,
        job: JobView,
        log_complete: bool,
        printed: bool,
        changes: Future[list[Change]],
    ) -> OutputManifest:
        deadline = time.monotonic() + self._limits.output_deadline
        backoff = 1.0
        while True:
            saver = _OutputSaver(
                container,
                self._filestore,
                self._limits,
                container_id,
                job,
                log_complete,
                printed,
                changes,
                self._background,
            )
            try:
                saver.save()
                return saver.manifest
            except TransferError as exc:
                if time.monotonic() + backoff >= deadline:
                    saver.manifest.error = (
                        f"could not save its outputs within {self._limits.output_deadline:g}s "
                        f"(FREIGHT_OUTPUT_DEADLINE): {exc}"
                    )
                    return saver.manifest
                log.warning("outputs of job %s not saved yet (%s); retrying", job.job_id, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
            except ExecutorError as exc:
                saver.manifest.error = f"could not read its outputs: {exc}"
                return saver.manifest


class _OutputSaver:
    """One pass over an ended container's outputs, building its manifest."""

    def __init__(
        self,
        container: ContainerFiles,
        filestore: FilestoreClient,
        limits: FileLimits,
        container_id: str,
        job: JobView,
        log_complete: bool,
        printed: bool,
        changes: Future[list[Change]],
        sender: ThreadPoolExecutor,
    ):
        self._container = container
        self._sender = sender
        self._changes = changes
        self._filestore = filestore
        self._limits = limits
        self._id = container_id
        self._job = job
        self._log_complete = log_complete
        self._printed = printed  # False: the job printed nothing, its streams are empty
        self._inputs = {str(f["path"]): f for f in job.files}
        self._input_mtime = input_mtime(job)
        self.manifest = OutputManifest()
        self._entries = 0
        self._digests: dict[str, str] = {}  # what this pass saved, for hard links to it
        self._small: list[tuple[dict[str, Any], bytes]] = []  # listed, awaiting their digests
        self._small_bytes = 0
        self._sending: tuple[list[tuple[dict[str, Any], bytes]], Future[list[Any]]] | None = None

    def save(self) -> None:
        now = datetime.now(UTC).isoformat()
        self._record(FileEntry(posixpath.basename(OUTPUT_DIR), OUTPUT_DIR, "dir", 0, "0755", now))
        if not self._printed:
            for path in (STDOUT_PATH, STDERR_PATH):
                self._record(_empty_file(path, now), protocol.EMPTY_DIGEST)
        elif self._log_complete:
            self._save_streams_from_log(now)
        else:
            for stream, path in (("stdout", STDOUT_PATH), ("stderr", STDERR_PATH)):
                self._save_stream(stream, path, now)
        changes = [c for c in self._changes.result() if not excluded(c.path)]
        self.manifest.deleted = sorted(c.path for c in changes if c.kind == "deleted")
        added = {c.path for c in changes if c.kind == "added"}
        # An added directory whose contents are listed and hold nothing (the working directory
        # of a job that wrote nothing) is recorded from its stat, without an archive.
        holding = {parent_of(path) for path in added}
        for change in sorted(changes, key=lambda c: c.path):
            if change.kind == "deleted" or parent_of(change.path) in added:
                continue  # an added directory's archive holds everything in it
            whole_tree = change.kind == "added" and (
                change.path in holding or not change.contents_listed
            )
            self._save_path(change.path, whole_tree=whole_tree)
        self._send_small()
        self._settle_small()

    def _save_streams_from_log(self, modified: str) -> None:
        """stdout and stderr from the log the filestore already has: no second copy sent."""
        blobs = self._filestore.save_log(self._job.job_id, self._job.attempt)
        for stream, path in (("stdout", STDOUT_PATH), ("stderr", STDERR_PATH)):
            blob = blobs[stream]
            if (reason := self._no_room_for(blob.size)) is not None:
                self._skip(path, blob.size, modified, reason)
                continue
            self.manifest.saved_bytes += blob.size
            entry = FileEntry(posixpath.basename(path), path, "file", blob.size, "0644", modified)
            self._record(entry, blob.digest, blob.upload)

    def _save_stream(self, stream: str, path: str, modified: str) -> None:
        """One of the output streams, read from the engine (when the log is incomplete)."""
        remaining = self._limits.max_output_bytes - self.manifest.saved_bytes
        seen = 0

        def counted() -> Iterator[bytes]:
            nonlocal seen
            for chunk in self._container.output(self._id, stream):
                seen += len(chunk)
                if seen > remaining:
                    raise _OverBudget
                yield chunk

        try:
            stored = self._filestore.upload(counted())
        except _OverBudget:
            self._skip(path, seen, modified, "over FREIGHT_MAX_OUTPUT_BYTES")
            return
        self.manifest.saved_bytes += stored.size
        entry = FileEntry(posixpath.basename(path), path, "file", stored.size, "0644", modified)
        self._record(entry, stored.digest, stored.upload)

    def _save_path(self, path: str, whole_tree: bool) -> None:
        try:
            stat = self._container.stat(self._id, path)
        except PathNotFound:
            return  # gone since the diff (a mount point, a race with the job's own cleanup)
        if stat.type == "dir" and not whole_tree:
            self._record(_entry_of_stat(path, stat))  # changed: its contents are listed apart
            return
        archive = self._container.read_archive(self._id, path)
        try:
            self._save_archive(path, archive)
        finally:
            archive.close()

    def _save_archive(self, root: str, archive: Archive) -> None:
        base = parent_of(root)
        tar = TarReader(archive)
        for member in tar:
            path = posixpath.normpath(posixpath.join(base, member.name))
            if excluded(path):
                continue
            entry = _entry_of_member(path, member)
            if member.islnk():
                self._save_hard_link(base, entry, member)
            elif not member.isreg():
                self._record(entry)
            elif self._unchanged_input(path, member):
                self._record(entry, str(self._inputs[path]["digest"]))
            elif (reason := self._no_room_for(member.size)) is not None:
                self._skip(path, member.size, entry.modified, reason)
            elif member.size <= SMALL_FILE:
                self._add_small(entry, tar.read())
            else:
                stored = self._filestore.upload(read_chunks(tar))
                self.manifest.saved_bytes += stored.size
                self._record(entry, stored.digest, stored.upload)

    def _add_small(self, entry: FileEntry, data: bytes) -> None:
        """Listed now, in its place; its digest comes when its batch is stored."""
        listed = self._record(entry)
        if listed is None:
            return
        self.manifest.saved_bytes += len(data)
        self._small.append((listed, data))
        self._small_bytes += len(data)
        if len(self._small) >= SMALL_BATCH_FILES or self._small_bytes >= SMALL_BATCH_BYTES:
            self._send_small()

    def _send_small(self) -> None:
        """The gathered small files go to the filestore, which stores them while the next are
        read; the batch before them is settled first (two batches held at most)."""
        self._settle_small()
        if not self._small:
            return
        batch, self._small, self._small_bytes = self._small, [], 0
        upload = self._sender.submit(self._filestore.upload_many, [data for _, data in batch])
        self._sending = batch, upload

    def _settle_small(self) -> None:
        """The batch on its way is stored: its entries get their digests (or its error)."""
        if self._sending is None:
            return
        (batch, upload), self._sending = self._sending, None
        for (listed, _), blob in zip(batch, upload.result(), strict=True):
            listed["digest"], listed["upload"] = blob.digest, blob.upload
            self._digests[listed["path"]] = blob.digest

    def _save_hard_link(self, base: str, entry: FileEntry, member: tarfile.TarInfo) -> None:
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        self._send_small()  # its target may be waiting for its digest
        self._settle_small()
        digest = self._digests.get(target)
        if digest is None:
            self._skip(entry.path, 0, entry.modified, f"a hard link to {target}, not saved")
        else:
            self._record(entry, digest)

    def _unchanged_input(self, path: str, member: tarfile.TarInfo) -> bool:
        wanted = self._inputs.get(path)
        return (
            wanted is not None
            and int(wanted["size"]) == member.size
            and int(member.mtime) == self._input_mtime
        )

    def _no_room_for(self, size: int) -> str | None:
        if self._entries >= self._limits.max_output_files:
            return "over FREIGHT_MAX_OUTPUT_FILES"
        if self.manifest.saved_bytes + size > self._limits.max_output_bytes:
            return "over FREIGHT_MAX_OUTPUT_BYTES"
        return None

    def _record(
        self, entry: FileEntry, digest: str | None = None, upload: str | None = None
    ) -> dict[str, Any] | None:
        """The entry as the manifest lists it; None if it was skipped."""
        if self._entries >= self._limits.max_output_files:
            self._skip(entry.path, entry.size, entry.modified, "over FREIGHT_MAX_OUTPUT_FILES")
            return None
        self._entries += 1
        if digest is not None:
            self._digests[entry.path] = digest
        listed = {**entry.to_dict(), "digest": digest}
        del listed["name"]
        if upload is not None:
            listed["upload"] = upload  # the filestore's hold, ended once it reads the manifest
        self.manifest.files.append(listed)
        return listed

    def _skip(self, path: str, size: int, modified: str | None, reason: str) -> None:
        # The skipped list is bounded too: past the limit only a count would grow.
        if len(self.manifest.skipped) < self._limits.max_output_files:
            self.manifest.skipped.append(
                {"path": path, "type": "file", "size": size, "modified": modified, "reason": reason}
            )


class _OverBudget(Exception):
    pass


# -- live reads, for the API -----------------------------------------------------------------------


class LiveFiles:
    """Serves `live` requests on this runner's queue: a running job's files, from its container."""

    def __init__(self, executor: Executor, container: ContainerFiles, namespace: str):
        self._executor = executor
        self._container = container
        self._namespace = namespace

    def handlers(self) -> Mapping[str, Handler]:
        return {protocol.LIVE: self.read}

    def read(self, request: Envelope, conversation: Conversation) -> None:
        asked = request.json()
        window = min(int(asked.get("window") or WINDOW), WINDOW)
        try:
            path = requested_path(asked.get("path"))
            name = container_name(self._namespace, str(asked["job_id"]), int(asked["attempt"]))
        except (InvalidPath, KeyError, TypeError, ValueError) as exc:
            conversation.fail(protocol.INVALID, f"a bad live request: {exc}")
            return
        found = self._executor.find(name)
        if found is None:
            conversation.fail(protocol.GONE, f"the container {name} is gone")
            return
        try:
            self._send(conversation, found.container_id, path, window)
        except PathNotFound:
            if self._executor.find(name) is None:
                conversation.fail(protocol.GONE, f"the container {name} is gone")
            else:
                conversation.fail(protocol.NOT_FOUND, f"no {path} in the job")
        except ExecutorError as exc:
            conversation.fail("unavailable", str(exc))

    def _send(self, conversation: Conversation, container_id: str, path: str, window: int) -> None:
        stat = self._container.stat(container_id, path)
        for _ in range(MAX_SYMLINK_HOPS):
            if stat.type != "symlink":
                break
            path = posixpath.normpath(posixpath.join(parent_of(path), stat.link_target))
            stat = self._container.stat(container_id, path)
        archive = self._container.read_archive(container_id, path)
        try:
            tar = TarReader(archive)
            if stat.type == "dir":
                head = {"type": "dir", "path": path, **_listing(tar, path)}
                send_stream(conversation, head, [], window)
                return
            member = next(iter(tar), None)
            if member is None or not member.isreg():
                conversation.fail(protocol.INVALID, f"{path} is not a regular file")
                return
            head = {**_entry_of_member(path, member).to_dict(), "type": "file"}
            send_stream(conversation, head, read_chunks(tar), window)
        finally:
            archive.close()


def _listing(tar: TarReader, path: str) -> dict[str, Any]:
    """The top-level entries of a directory's archive (the rest of it is read past)."""
    entries: list[dict[str, Any]] = []
    root: str | None = None
    truncated = False
    for member in tar:
        if root is None:
            root = member.name
            continue
        relative = member.name[len(root) :].lstrip("/")
        if not relative or "/" in relative:
            continue
        if len(entries) >= MAX_LISTING:
            truncated = True
            continue
        entries.append(_entry_of_member(posixpath.join(path, relative), member).to_dict())
    entries.sort(key=lambda e: e["name"])
    return {"entries": entries, "truncated": truncated} if truncated else {"entries": entries}


# -- small pieces ----------------------------------------------------------------------------------


def excluded(path: str) -> bool:
    return path in ENGINE_PATHS or is_reserved(path)


def input_mtime(job: JobView) -> int:
    """Inputs are placed with the job's submission time: a file still bearing it (and its size)
    is taken as the input the job left untouched."""
    return int(job.created_at.timestamp())


def tar_of_one(path: str, size: int, content: Iterable[bytes], mtime: int) -> Iterator[bytes]:
    """A tar stream of one regular file, generated as `content` arrives. The engine makes the
    missing parent directories (0755) when it extracts it."""
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mtime, info.mode = size, mtime, 0o644
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    yield from content
    yield b"\0" * (-size % tarfile.BLOCKSIZE)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _checked(
    download: Iterable[bytes], digest: str, size: int, deadline: float, limits: FileLimits
) -> Iterator[bytes]:
    """The blob's bytes, checked against its digest and size before the archive is closed.

    An input of more than one chunk is hashed on a thread of its own, each chunk while the
    engine takes it (hashlib lets go of the GIL): the check costs CPU, not time on the way in.
    The chunks are hashed in order, at most one behind the one being sent."""
    hasher, received = hashlib.sha256(), 0
    hashing: Future[None] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="input-hash") as pool:
        for chunk in download:
            if time.monotonic() > deadline:
                raise InputUnavailable(
                    f"the input was still arriving after {limits.input_deadline:g}s "
                    "(FREIGHT_INPUT_DEADLINE)"
                )
            if size <= CHUNK_BYTES:
                hasher.update(chunk)  # one chunk: nothing to overlap it with
            else:
                if hashing is not None:
                    hashing.result()
                hashing = pool.submit(hasher.update, chunk)
            received += len(chunk)
            yield chunk
        if hashing is not None:
            hashing.result()
    if received != size or f"sha256:{hasher.hexdigest()}" != digest:
        raise TransferError(f"the filestore sent {received} bytes that do not match {digest}")


def _entry_of_member(path: str, member: tarfile.TarInfo) -> FileEntry:
    if member.isdir():
        kind = "dir"
    elif member.issym():
        kind = "symlink"
    elif member.isreg() or member.islnk():
        kind = "file"
    else:
        kind = "other"
    return FileEntry(
        name=posixpath.basename(path) or "/",
        path=path,
        type=kind,
        size=member.size if kind == "file" else 0,
        mode=f"{member.mode & 0o7777:04o}",
        modified=datetime.fromtimestamp(member.mtime, UTC).isoformat(),
        target=member.linkname if member.issym() else None,
    )


def _empty_file(path: str, modified: str) -> FileEntry:
    return FileEntry(posixpath.basename(path), path, "file", 0, "0644", modified)


def _entry_of_stat(path: str, stat: PathStat) -> FileEntry:
    try:
        modified: str | None = datetime.fromisoformat(stat.modified).astimezone(UTC).isoformat()
    except ValueError:
        modified = None
    return FileEntry(
        name=posixpath.basename(path) or "/",
        path=path,
        type=stat.type,
        size=stat.size if stat.type == "file" else 0,
        mode=f"{stat.mode & 0o7777:04o}",
        modified=modified,
        target=stat.link_target or None,
    )


def describe(manifest: OutputManifest) -> str:
    files = sum(1 for f in manifest.files if f.get("type") == "file")
    return f"{files} files, {manifest.saved_bytes} bytes, {len(manifest.skipped)} skipped"


# -- wiring ----------------------------------------------------------------------------------------


def start_file_service(
    settings: Settings, executor: Executor, topology: Topology
) -> tuple[AttemptFiles, Node]:
    """The runner's end of file transfers: the filestore client its attempts use, and its own
    queue serving live reads. Close the node at shutdown."""
    name = f"{settings.namespace}.runner.{settings.runner_id}"
    publisher = Publisher(settings.amqp_url, topology, f"{name}.files", settings.publish_timeout)
    container = executor if isinstance(executor, ContainerFiles) else None
    config = NodeConfig(settings.amqp_url, name, timeout=settings.transfer_timeout)
    if container is not None:
        config.service_queue = protocol.runner_files_queue(settings.namespace, settings.runner_id)
        config.handlers = LiveFiles(executor, container, settings.namespace).handlers()
    node = Node(config, publisher).start()
    limits = FileLimits(
        input_deadline=settings.input_deadline,
        output_deadline=settings.output_deadline,
        max_output_bytes=settings.max_output_bytes,
        max_output_files=settings.max_output_files,
    )
    files = AttemptFiles(
        container, FilestoreClient(node, settings.namespace), limits, settings.job_workdir
    )
    return files, node
