"""Where the bytes live: content-addressed blobs behind a small interface.

A blob is named by the sha256 of its bytes ("sha256:<hex>"), so the same bytes are stored once.
A blob is stored alone, or, when small blobs come together (a job's many small outputs), in a
pack with the others: its place is then the pack and an offset, which the caller records.
LocalBlobStore keeps them under a directory; an object store can implement the same protocols.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from freight_server.shared.filestore_protocol import DIGEST, EMPTY_DIGEST

# A large blob's bytes are pushed to disk in the background while it is being written, each time
# SYNC_STEP more have been written: the fsync before its commit then waits for the last few MiB,
# not for all of them. Blobs smaller than that are synced once, at the end, as before.
SYNC_STEP = 16 * 1024 * 1024
# Bytes are hashed and written a piece at a time, each while it is still in the CPU's cache.
PIECE_BYTES = 1024 * 1024
_PACK = re.compile(r"[0-9a-f]{32}")
_background_syncs = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blob-sync")


class BlobNotFound(LookupError):
    pass


class Packed(NamedTuple):
    """Where a blob stored in a pack lies."""

    pack: str
    offset: int
    size: int


class BlobMismatch(ValueError):
    """The bytes written are not the bytes the client said it sent."""


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def written(self) -> tuple[str, int]:
        """The digest and size of what was written so far."""

    def seal(self, digest: str, size: int) -> None:
        """Check the bytes against `digest` and `size` (BlobMismatch); durable once published."""

    def place_of(self, digest: str, size: int) -> Packed | None:
        """None: a blob stored alone."""

    def publish(self, kept: Collection[str]) -> None:
        """Make the sealed bytes readable under their digest if it is among `kept` (the blobs
        recorded as stored now), and not already there."""

    def discard(self) -> None: ...


class BlobReader(Protocol):
    size: int

    def chunks(self, size: int) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class BlobBatch(Protocol):
    """Small blobs stored together in one pack: durable once made, readable once published."""

    digests: list[str]  # one a blob, in their order

    def place_of(self, digest: str, size: int) -> Packed | None: ...

    def publish(self, kept: Collection[str]) -> None:
        """Make the pack readable if it holds any of `kept`."""

    def discard(self) -> None: ...


class BlobStore(Protocol):
    def begin(self) -> BlobWriter: ...

    def stage(
        self, blobs: Sequence[bytes], stored: Callable[[Collection[str]], Collection[str]]
    ) -> BlobBatch:
        """Hash and write these small blobs, durably, but those `stored` says are stored
        already; publish() makes them readable."""

    def open(self, digest: str, packed: Packed | None = None) -> BlobReader:
        """The blob stored alone, or where it is `packed`; raises BlobNotFound."""

    def delete(self, digest: str) -> None:
        """A blob stored alone; idempotent."""

    def delete_pack(self, pack: str) -> None:
        """A pack none of whose blobs is kept any more; idempotent."""

    def pack_names(self) -> list[str]:
        """Every pack stored."""


class LocalBlobStore:
    """`<root>/sha256/ab/abcdef...` a blob stored alone, `<root>/packs/<id>` a pack; each
    written to `<root>/tmp/` first: temporary file, fsync, rename."""

    def __init__(self, root: Path):
        self._root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.packs = root / "packs"
        self.packs.mkdir(exist_ok=True)

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

    def pack_location(self, pack: str) -> str:
        if not _PACK.fullmatch(pack):
            raise BlobNotFound(f"{pack!r} is not a pack")
        return f"{self.packs}/{pack}"

    def stage(
        self, blobs: Sequence[bytes], stored: Callable[[Collection[str]], Collection[str]]
    ) -> StagedPack:
        return StagedPack(self, blobs, stored)

    @property
    def tmp(self) -> Path:
        return self._tmp

    def open(self, digest: str, packed: Packed | None = None) -> LocalBlobReader:
        if digest == EMPTY_DIGEST:  # no bytes: there, stored or not (a job's empty stdout)
            return LocalBlobReader(open(os.devnull, "rb"), 0)  # noqa: SIM115
        try:
            if packed is None:
                file = open(self.location_of(digest), "rb")  # noqa: SIM115
                return LocalBlobReader(file, os.fstat(file.fileno()).st_size)
            file = open(self.pack_location(packed.pack), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest}") from None
        file.seek(packed.offset)
        return LocalBlobReader(file, packed.size)

    def delete(self, digest: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.location_of(digest))

    def delete_pack(self, pack: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.pack_location(pack))

    def pack_names(self) -> list[str]:
        return [name for name in os.listdir(self.packs) if _PACK.fullmatch(name)]


class StagedPack:
    """Small blobs written together (`LocalBlobStore.stage`) as one pack: their bytes one after
    another in one temporary file, made durable with one fdatasync; no file, rename or
    directory entry of their own. Only the blobs not stored yet (`stored` says which are) go in,
    each once; the empty blob never does (it is there, stored or not). `publish` moves the pack
    into place if any of its blobs is to be kept (the caller holds the retention lock, as it
    did when asking what was stored); `discard` drops what is left."""

    def __init__(
        self,
        store: LocalBlobStore,
        blobs: Sequence[bytes],
        stored: Callable[[Collection[str]], Collection[str]],
    ):
        self._store = store
        self.pack = uuid.uuid4().hex
        self.digests = [f"sha256:{hashlib.sha256(data).hexdigest()}" for data in blobs]
        self.offsets: dict[str, int] = {}  # digest → where its bytes begin in the pack
        self._staged: str | None = os.path.join(store.tmp, f"pack-{self.pack}")
        skipped = {EMPTY_DIGEST, *stored(set(self.digests) - {EMPTY_DIGEST})}
        offset, pieces = 0, []
        for digest, data in zip(self.digests, blobs, strict=True):
            if digest not in self.offsets and digest not in skipped:
                self.offsets[digest] = offset
                offset += len(data)
                pieces.append(data)
        try:
            fd = os.open(self._staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with memoryview(b"".join(pieces)) as left:
                    while left:
                        left = left[os.write(fd, left) :]
                os.fdatasync(fd)
            finally:
                os.close(fd)
        except BaseException:
            self.discard()
            raise

    def place_of(self, digest: str, size: int) -> Packed | None:
        """Where it lies in the pack; None for the empty blob, which is in none."""
        offset = self.offsets.get(digest)
        return None if offset is None else Packed(self.pack, offset, size)

    def publish(self, kept: Collection[str]) -> None:
        """Into place, if any of `kept` (the blobs recorded as stored here) is in the pack."""
        if self._staged is None or not any(digest in self.offsets for digest in kept):
            return
        os.replace(self._staged, self._store.pack_location(self.pack))
        self._staged = None
        _fsync(self._store.packs)  # the rename survives a crash

    def discard(self) -> None:
        if self._staged is not None:
            with suppress(FileNotFoundError):
                os.unlink(self._staged)
            self._staged = None


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

    def place_of(self, digest: str, size: int) -> None:
        return None

    def publish(self, kept: Collection[str]) -> None:
        assert self._digest is not None, "publish before seal"
        final = self._store.path_of(self._digest)
        if self._digest not in kept or final.exists():
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
    """`size` bytes from where the file stands: a blob's own file, or its place in a pack."""

    def __init__(self, file: BinaryIO, size: int):
        self._file = file
        self.size = size

    def chunks(self, size: int) -> Iterator[bytes]:
        left = self.size
        while left > 0:
            chunk = self._file.read(min(size, left))
            if not chunk:
                raise OSError(f"{self._file.name}: {left} of its bytes are missing")
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self._file.close()


def _fsync(path: str | Path) -> None:
    """A file's bytes, or a directory's entries (a rename must survive a crash too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
