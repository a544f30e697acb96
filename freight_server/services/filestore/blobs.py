"""Where the bytes live: content-addressed blobs behind a small interface.

A blob is named by the sha256 of its bytes ("sha256:<hex>"), so the same bytes are stored once.
LocalBlobStore keeps them under a directory; an object store can implement the same protocols.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, Protocol

from freight_server.shared.filestore_protocol import DIGEST, EMPTY_DIGEST

# A large blob's bytes are pushed to disk in the background while it is being written, each time
# SYNC_STEP more have been written: the fsync before its commit then waits for the last few MiB,
# not for all of them. Blobs smaller than that are synced once, at the end, as before.
SYNC_STEP = 16 * 1024 * 1024
# Bytes are hashed and written a piece at a time, each while it is still in the CPU's cache.
PIECE_BYTES = 1024 * 1024
_background_syncs = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blob-sync")


class BlobNotFound(LookupError):
    pass


class BlobMismatch(ValueError):
    """The bytes written are not the bytes the client said it sent."""


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def written(self) -> tuple[str, int]:
        """The digest and size of what was written so far."""

    def seal(self, digest: str, size: int) -> None:
        """Check the bytes against `digest` and `size` (BlobMismatch); durable once published."""

    def publish(self) -> None:
        """Make the sealed bytes readable under their digest (a no-op if already there)."""

    def discard(self) -> None: ...


class BlobReader(Protocol):
    size: int

    def chunks(self, size: int) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class BlobBatch(Protocol):
    """Small blobs stored together: durable once made, readable once published."""

    digests: list[str]  # one a blob, in their order

    def publish(self) -> None: ...

    def discard(self) -> None: ...


class BlobStore(Protocol):
    def begin(self) -> BlobWriter: ...

    def stage(self, blobs: Sequence[bytes]) -> BlobBatch:
        """Hash and write these small blobs, durably; publish() makes them readable."""

    def open(self, digest: str) -> BlobReader:
        """Raises BlobNotFound."""

    def delete(self, digest: str) -> None:
        """Idempotent."""


class LocalBlobStore:
    """`<root>/sha256/ab/abcdef...`, written to `<root>/tmp/` first: temp file, fsync, rename."""

    def __init__(self, root: Path):
        self._root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def discard_partial_uploads(self) -> None:
        """At start-up: uploads in progress died with the previous process."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path_of(self, digest: str) -> Path:
        return Path(self.location_of(digest))

    def location_of(self, digest: str) -> str:
        """`path_of` as a string: a batch of small blobs looks up thousands, and pathlib's
        parsing of each cost more than writing the blob."""
        if not DIGEST.match(digest):
            raise BlobNotFound(f"{digest!r} is not a sha256 digest")
        hexdigest = digest.removeprefix("sha256:")
        return f"{self._root}/sha256/{hexdigest[:2]}/{hexdigest}"

    def begin(self) -> LocalBlobWriter:
        return LocalBlobWriter(self, self._tmp / f"upload-{uuid.uuid4().hex}")

    def stage(self, blobs: Sequence[bytes]) -> StagedBlobs:
        return StagedBlobs(self, blobs)

    @property
    def tmp(self) -> Path:
        return self._tmp

    def open(self, digest: str) -> LocalBlobReader:
        try:
            return LocalBlobReader(open(self.path_of(digest), "rb"))  # noqa: SIM115
        except FileNotFoundError:
            if digest == EMPTY_DIGEST:  # no bytes: there, stored or not (a job's empty stdout)
                return LocalBlobReader(open(os.devnull, "rb"))  # noqa: SIM115
            raise BlobNotFound(f"no blob {digest}") from None

    def delete(self, digest: str) -> None:
        self.path_of(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for path in (self._root / "sha256").glob("*/*"):
            yield f"sha256:{path.name}"


class StagedBlobs:
    """Small blobs written together (`LocalBlobStore.stage`): hashed, written to temporary files
    and made durable with one sync of the file system, not one fsync each; `publish` renames
    them into place (the caller holds the retention lock), `discard` drops what is left."""

    def __init__(self, store: LocalBlobStore, blobs: Sequence[bytes]):
        self._store = store
        self.digests: list[str] = []
        # digest → its temporary file, if not stored yet (plain strings: thousands a batch)
        self._staged: dict[str, str] = {}
        prefix = os.path.join(store.tmp, f"batch-{uuid.uuid4().hex}-")
        try:
            for data in blobs:
                digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
                self.digests.append(digest)
                if digest in self._staged or os.path.exists(store.location_of(digest)):
                    continue
                staged = f"{prefix}{len(self._staged)}"
                fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                self._staged[digest] = staged
                try:
                    with memoryview(data) as left:
                        while left:
                            left = left[os.write(fd, left) :]
                finally:
                    os.close(fd)
            if self._staged:
                _sync_file_system(store.tmp, list(self._staged.values()))
        except BaseException:
            self.discard()
            raise

    def publish(self) -> None:
        parents: set[str] = set()
        for digest, staged in self._staged.items():
            final = self._store.location_of(digest)
            if os.path.exists(final):  # stored meanwhile by another upload
                os.unlink(staged)
                continue
            parent = os.path.dirname(final)
            if parent not in parents:
                os.makedirs(parent, exist_ok=True)
                parents.add(parent)
            os.replace(staged, final)
        if parents:
            _sync_file_system(self._store.tmp, sorted(parents))  # the renames survive a crash
        self._staged.clear()

    def discard(self) -> None:
        for staged in self._staged.values():
            with suppress(FileNotFoundError):
                os.unlink(staged)
        self._staged.clear()


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore, path: Path):
        self._store = store
        self._path = path
        self._file: BinaryIO | None = open(path, "xb")  # noqa: SIM115 - closed by seal/discard
        self._hash = hashlib.sha256()
        self._size = 0
        self._digest: str | None = None
        self._synced = False  # the temporary file's bytes are on disk
        self._unsynced = 0  # bytes written since the last background sync began
        self._syncing: Future[None] | None = None  # at most one at a time

    def write(self, data: bytes) -> None:
        file = self._file
        assert file is not None, "write after seal"
        with memoryview(data) as view:
            for at in range(0, len(view), PIECE_BYTES):
                piece = view[at : at + PIECE_BYTES]
                self._hash.update(piece)
                file.write(piece)
        self._size += len(data)
        self._unsynced += len(data)
        if self._unsynced >= SYNC_STEP and (self._syncing is None or self._syncing.done()):
            self._finish_sync()  # a failed one's error is this write's
            file.flush()
            self._syncing = _background_syncs.submit(os.fdatasync, file.fileno())
            self._unsynced = 0

    def _finish_sync(self) -> None:
        """Wait for the background sync in progress, if any; raises its OSError."""
        syncing, self._syncing = self._syncing, None
        if syncing is not None:
            syncing.result()

    def written(self) -> tuple[str, int]:
        return f"sha256:{self._hash.hexdigest()}", self._size

    def seal(self, digest: str, size: int) -> None:
        assert self._file is not None, "sealed twice"
        self._file.flush()
        try:
            self._finish_sync()  # its error, if it failed, would not be reported again
        except OSError:
            self._file.close()
            self._file = None
            raise
        actual = f"sha256:{self._hash.hexdigest()}"
        if actual != digest or self._size != size:
            self._file.close()
            self._file = None
            raise BlobMismatch(
                f"received {self._size} bytes with digest {actual}; "
                f"the client sent {size} bytes with digest {digest}"
            )
        # Bytes already stored (and durable since they were published) need not be made durable
        # once more only to be deleted: the usual case for inputs sent again. publish() checks
        # again under the store's lock and syncs then if they went in between.
        self._synced = not self._store.path_of(actual).exists()
        if self._synced:
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._digest = actual

    def publish(self) -> None:
        assert self._digest is not None, "publish before seal"
        final = self._store.path_of(self._digest)
        if final.exists():
            # The same bytes are already stored: this copy goes before the upload is answered.
            self._path.unlink(missing_ok=True)
            return
        if not self._synced:
            _fsync(self._path)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path, final)
        _fsync(final.parent)

    def discard(self) -> None:
        if self._file is not None:
            with suppress(OSError):
                self._finish_sync()  # not closed under a sync in progress
            self._file.close()
            self._file = None
        self._path.unlink(missing_ok=True)


class LocalBlobReader:
    def __init__(self, file: BinaryIO):
        self._file = file
        self.size = os.fstat(file.fileno()).st_size

    def chunks(self, size: int) -> Iterator[bytes]:
        while chunk := self._file.read(size):
            yield chunk

    def close(self) -> None:
        self._file.close()


def _sync_file_system(anywhere: Path, paths: Sequence[str | Path]) -> None:
    """Make these files' bytes (or directories' entries) durable: one syncfs(2) of the file
    system they are on where Linux offers it, else an fsync each."""
    if _syncfs is not None:
        fd = os.open(anywhere, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        _fsync(path)


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return syncfs


_syncfs = _find_syncfs()


def _fsync(path: str | Path) -> None:
    """A file's bytes, or a directory's entries (a rename must survive a crash too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
