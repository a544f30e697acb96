"""A multipart/form-data body streamed from disk: files are read in chunks as the request is
sent, so an upload of any size needs bounded memory, and each chunk can report progress."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

CHUNK = 256 * 1024
FILE_FIELD = "file[]"

# Called with the number of bytes just sent.
OnSent = Callable[[int], None]


@dataclass(frozen=True)
class Upload:
    """One file to send: where it comes from, and its destination path in the job."""

    source: str | os.PathLike[str] | BinaryIO | bytes
    dest: str

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again: a file object can be read only once."""
        return isinstance(self.source, str | os.PathLike | bytes)

    def open(self) -> tuple[BinaryIO, bool]:
        """The stream to read, and whether we opened it (and so must close it)."""
        if isinstance(self.source, bytes):
            return io.BytesIO(self.source), True
        if isinstance(self.source, str | os.PathLike):
            return open(self.source, "rb"), True  # noqa: SIM115 - closed by the body
        return self.source, False

    def size(self) -> int | None:
        if isinstance(self.source, bytes):
            return len(self.source)
        if isinstance(self.source, str | os.PathLike):
            return Path(self.source).stat().st_size
        try:
            here = self.source.tell()
            end = self.source.seek(0, io.SEEK_END)
            self.source.seek(here)
            return end - here
        except (AttributeError, OSError, ValueError):
            return None  # a pipe or socket: sent chunked, its size unknown


def _disposition(name: str, filename: str | None = None) -> str:
    header = f'Content-Disposition: form-data; name="{name}"'
    if filename is None:
        return header
    if filename.isascii() and not any(c in filename for c in '"\\\r\n'):
        return f'{header}; filename="{filename}"'
    # RFC 5987/7578: names outside plain ASCII travel percent-encoded in filename*.
    return f"{header}; filename*=UTF-8''{quote(filename, safe='')}"


class MultipartBody:
    """Iterable body for `requests`; `len()` is exact when every file's size is known, which
    lets requests send a Content-Length (the API checks it against its upload limit)."""

    def __init__(
        self,
        fields: Sequence[tuple[str, str]],
        uploads: Sequence[Upload],
        on_sent: OnSent | None = None,
    ):
        self.boundary = f"freight-{uuid.uuid4().hex}"
        self._fields = fields
        self._uploads = uploads
        self._on_sent = on_sent
        sizes = [u.size() for u in uploads]
        self._length: int | None = None
        if all(s is not None for s in sizes):
            framing = sum(len(self._field_part(n, v)) for n, v in fields)
            framing += sum(len(self._file_head(u)) + 2 for u in uploads)
            self._length = framing + sum(s or 0 for s in sizes) + len(self._closing())

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int | None:
        return self._length

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("size unknown: some file is a stream")
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        for name, value in self._fields:
            yield self._sent(self._field_part(name, value))
        for upload in self._uploads:
            yield self._sent(self._file_head(upload))
            stream, owned = upload.open()
            try:
                while chunk := stream.read(CHUNK):
                    yield self._sent(chunk)
            finally:
                if owned:
                    stream.close()
            yield self._sent(b"\r\n")
        yield self._sent(self._closing())

    def _sent(self, chunk: bytes) -> bytes:
        if self._on_sent is not None:
            self._on_sent(len(chunk))
        return chunk

    def _field_part(self, name: str, value: str) -> bytes:
        head = f"--{self.boundary}\r\n{_disposition(name)}\r\n\r\n"
        return head.encode() + value.encode() + b"\r\n"

    def _file_head(self, upload: Upload) -> bytes:
        return (
            f"--{self.boundary}\r\n{_disposition(FILE_FIELD, upload.dest)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    def _closing(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()
