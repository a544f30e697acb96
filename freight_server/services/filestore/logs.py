"""Jobs' output: what each attempt printed, appended by its runner in batches as the job runs, and
read by the API from any point, whole or as it grows.

An attempt's log is `<root>/<job_id>/<attempt>.log`, a sequence of records in the order the
container wrote them: one byte for the stream (1 stdout, 2 stderr), four for the length (big
endian), then the bytes. `<attempt>.closed` marks that the runner saw the output end. An offset is
a record boundary; readers get whole records and the offset to go on from.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections import deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from freight_server.services.filestore.blobs import BlobWriter
from freight_server.shared.filestore_protocol import LOG_HEADER as HEADER
from freight_server.shared.filestore_protocol import MalformedRecords, log_records

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class LogError(ValueError):
    """A request about a log that cannot be honoured (a bad id, a malformed batch, a gap)."""


@dataclass(frozen=True)
class LogState:
    size: int  # bytes of records
    payload: int  # bytes the container wrote (records without their headers)
    closed: bool


@dataclass(frozen=True)
class LogChunk:
    records: bytes  # whole records, of the streams asked for
    next: int  # the offset to read on from
    closed: bool
    size: int


class LogStore:
    def __init__(self, root: Path):
        self._root = root
        self._lock = threading.Lock()  # appends are short; one at a time keeps them whole
        root.mkdir(parents=True, exist_ok=True)

    def append(self, job_id: str, attempt: int, at: int, data: bytes) -> int:
        """Append a batch that the runner believes starts at `at`. A batch already appended
        (a retry whose first answer was lost) is not appended twice. Returns the new size."""
        try:
            payload = sum(len(chunk) for _, chunk in log_records(data))
        except MalformedRecords as exc:
            raise LogError(str(exc)) from None
        path = self._path(job_id, attempt)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as log:
                size = log.tell()
                if size == at + len(data) and at >= 0:
                    return size  # the retry of a batch that made it
                if size != at:
                    raise LogError(f"the log is {size} bytes long, not {at}")
                log.write(data)
                self._add_payload(path, payload)
                return size + len(data)

    def close(self, job_id: str, attempt: int) -> None:
        path = self._path(job_id, attempt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        with open(path, "rb") as log:
            os.fsync(log.fileno())
        path.with_suffix(".closed").touch()

    def state(self, job_id: str, attempt: int) -> LogState:
        path = self._path(job_id, attempt)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        return LogState(size, self._payload(path), path.with_suffix(".closed").exists())

    def read(
        self, job_id: str, attempt: int, offset: int, limit: int, streams: Collection[int]
    ) -> LogChunk:
        path = self._path(job_id, attempt)
        closed = path.with_suffix(".closed").exists()  # before reading: no record is missed
        try:
            log = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return LogChunk(b"", offset, closed, 0)
        with log:
            size = os.fstat(log.fileno()).st_size
            log.seek(offset)
            kept = bytearray()
            at = offset
            while at < size and len(kept) < limit:
                header = log.read(HEADER.size)
                if len(header) < HEADER.size:
                    break
                stream, length = HEADER.unpack(header)
                if kept and len(kept) + HEADER.size + length > limit:
                    break
                if at + HEADER.size + length > size:
                    break  # a record still being written: read it next time
                body = log.read(length)
                if stream in streams:
                    kept += header + body
                at += HEADER.size + length
        return LogChunk(bytes(kept), at, closed and at >= size, size)

    def tail(
        self, job_id: str, attempt: int, lines: int, streams: Collection[int]
    ) -> tuple[int, int]:
        """Where the last `lines` lines of `streams` begin: the offset of the record they begin
        in, and how many of that record's bytes come before them."""
        if lines <= 0:
            return self.state(job_id, attempt).size, 0
        starts: deque[tuple[int, int]] = deque(maxlen=lines)
        at_line_start = True
        end = 0
        for offset, stream, body in self._scan(job_id, attempt):
            end = offset + HEADER.size + len(body)
            if stream not in streams or not body:
                continue
            if at_line_start:
                starts.append((offset, 0))
            newline = body.find(b"\n")
            while newline != -1 and newline + 1 < len(body):
                starts.append((offset, newline + 1))
                newline = body.find(b"\n", newline + 1)
            at_line_start = body.endswith(b"\n")
        if not starts:
            return end, 0
        return starts[0]

    def split(self, job_id: str, attempt: int, into: Mapping[int, BlobWriter]) -> None:
        """Write each stream's bytes, in order, to its writer: stdout and stderr as files."""
        for _, stream, body in self._scan(job_id, attempt):
            into[stream].write(body)

    def delete(self, job_id: str) -> None:
        if SAFE_ID.match(job_id):
            shutil.rmtree(self._root / job_id, ignore_errors=True)

    def _scan(self, job_id: str, attempt: int) -> Iterator[tuple[int, int, bytes]]:
        try:
            log = open(self._path(job_id, attempt), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        with log:
            at = 0
            while header := log.read(HEADER.size):
                if len(header) < HEADER.size:
                    return
                stream, length = HEADER.unpack(header)
                body = log.read(length)
                if len(body) < length:
                    return
                yield at, stream, body
                at += HEADER.size + length

    def _path(self, job_id: str, attempt: int) -> Path:
        if not SAFE_ID.match(job_id) or not isinstance(attempt, int) or attempt < 0:
            raise LogError(f"no log for job {job_id!r} attempt {attempt!r}")
        return self._root / job_id / f"{attempt}.log"

    @staticmethod
    def _payload(path: Path) -> int:
        try:
            return int(path.with_suffix(".payload").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _add_payload(self, path: Path, payload: int) -> None:
        """How many bytes of output the log holds: a restarted runner skips that many."""
        counter = path.with_suffix(".payload")
        partial = counter.with_suffix(".payload.tmp")
        partial.write_text(str(self._payload(path) + payload))
        partial.replace(counter)
