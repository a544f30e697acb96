"""Where the bytes live: content-addressed blobs behind a small interface.

A blob is named by the sha256 of its bytes ("sha256:<hex>"), so the same bytes are stored once.
LocalBlobStore keeps them under a directory; an object store can implement the same protocols.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from freight_server.shared.filestore_protocol import DIGEST


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


class BlobStore(Protocol):
    def begin(self) -> BlobWriter: ...

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
        if not DIGEST.match(digest):
            raise BlobNotFound(f"{digest!r} is not a sha256 digest")
        hexdigest = digest.removeprefix("sha256:")
        return self._root / "sha256" / hexdigest[:2] / hexdigest

    def begin(self) -> LocalBlobWriter:
        return LocalBlobWriter(self, self._tmp / f"upload-{uuid.uuid4().hex}")

    def open(self, digest: str) -> LocalBlobReader:
        try:
            return LocalBlobReader(open(self.path_of(digest), "rb"))  # noqa: SIM115
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest}") from None

    def delete(self, digest: str) -> None:
        self.path_of(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for path in (self._root / "sha256").glob("*/*"):
            yield f"sha256:{path.name}"


class LocalBlobWriter:
    def __init__(self, store: LocalBlobStore, path: Path):
        self._store = store
        self._path = path
        self._file: BinaryIO | None = open(path, "xb")  # noqa: SIM115 - closed by seal/discard
        self._hash = hashlib.sha256()
        self._size = 0
        self._digest: str | None = None
        self._synced = False  # the temporary file's bytes are on disk

    def write(self, data: bytes) -> None:
        assert self._file is not None, "write after seal"
        self._file.write(data)
        self._hash.update(data)
        self._size += len(data)

    def written(self) -> tuple[str, int]:
        return f"sha256:{self._hash.hexdigest()}", self._size

    def seal(self, digest: str, size: int) -> None:
        assert self._file is not None, "sealed twice"
        self._file.flush()
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


def _fsync(path: Path) -> None:
    """A file's bytes, or a directory's entries (a rename must survive a crash too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
