"""What the filestore, the runners and the API say to each other about files (docs/files.md).

Queues (namespaced, so deployments and tests sharing a broker never meet):
  `{namespace}.filestore`                 the filestore's requests: put, get, release
  `{namespace}.runner.{runner_id}.files`  one runner's requests: live (a running job's files)

put (an upload): the client sends PUT, then at once CHUNKs with their `seq`, never more than
  WINDOW (shared.rpc, known to both sides) beyond the last ACK {acked: n}; then COMMIT {size}
  (and optionally `digest`, checked if given). A small blob is PUT, CHUNK, COMMIT in one
  publish. The filestore hashes the bytes as it writes them (the only time they are hashed on
  the way in) and, once they are durable and their size is the one claimed, answers COMMITTED
  {digest, size, upload}, or the error `mismatch`. ABORT, or silence past the timeout, discards
  the upload.
put_many + blobs packed (each: 8 bytes of length, then its bytes; PUT_MANY_BYTES and
  PUT_MANY_BLOBS at most): small blobs stored together, each hashed once, there, all made
  durable with one sync and recorded in one transaction → REPLY {blobs: [{digest, size,
  upload}, ...]} in their order.
get {digest}: a stream (shared.rpc.send_stream) with head {digest, size}, or `not_found`.
release {uploads}: the uploads' holds end at once; blobs nothing else holds or refers to go.
live {job_id, attempt, path}: a stream with head {type: "file", size, ...} and the bytes, or a
  head {type: "dir", entries} alone; `not_found`, or `gone` when the container is no more.
log.append {job_id, attempt, at} + records: appended if the log is `at` bytes long (or already
  holds them: a retry) → REPLY {size}. log.close, log.state {size, payload, closed},
  log.read {job_id, attempt, offset, limit, streams} → REPLY with whole records as the body and
  {next, closed, size} in its headers; log.tail {..., lines, streams} → REPLY {offset, skip}.
  A record is one byte of stream (1 stdout, 2 stderr), four of length, then the bytes.
  log.save {job_id, attempt} → REPLY {stdout: {digest, size, upload}, stderr: {...}}: the log's
  streams stored as blobs (held like uploads), the job's /.freight/stdout and /.freight/stderr.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# Requests.
PUT = "put"
PUT_MANY = "put_many"
GET = "get"
RELEASE = "release"
LIVE = "live"
LOG_APPEND = "log.append"
LOG_CLOSE = "log.close"
LOG_STATE = "log.state"
LOG_READ = "log.read"
LOG_TAIL = "log.tail"
LOG_SAVE = "log.save"

# An upload's messages.
ACK = "ack"
COMMIT = "commit"
COMMITTED = "committed"
ABORT = "abort"
REPLY = "reply"

# Error codes.
NOT_FOUND = "not_found"
GONE = "gone"
MISMATCH = "mismatch"
INVALID = "invalid"

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
PUT_MANY_BYTES = 16 * 1024 * 1024  # what one put_many may carry: one message
PUT_MANY_BLOBS = 4096  # and how many blobs
_BLOB_LENGTH = struct.Struct(">Q")
# No bytes: never stored, always there (a job that printed nothing refers to it at no cost).
EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def filestore_queue(namespace: str) -> str:
    return f"{namespace}.filestore"


def runner_files_queue(namespace: str, runner_id: str) -> str:
    return f"{namespace}.runner.{runner_id}.files"


@dataclass(frozen=True)
class StoredBlob:
    digest: str  # "sha256:<hex>"
    size: int
    upload: str  # the upload's id: what holds the blob until a job refers to it


@dataclass(frozen=True)
class FileEntry:
    """One entry of a job's file system, as listings and output manifests show it."""

    name: str
    path: str
    type: str  # "file", "dir", "symlink" or "other"
    size: int
    mode: str  # permission bits in octal, e.g. "0644"
    modified: str | None  # ISO 8601, UTC
    target: str | None = None  # a symlink's target

    def to_dict(self) -> dict[str, Any]:
        # Spelt out: `dataclasses.asdict` copies deeply, a tenth of a runner's CPU for a job of
        # 20 000 outputs.
        out = {
            "name": self.name,
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "mode": self.mode,
            "modified": self.modified,
        }
        if self.target is not None:
            out["target"] = self.target
        return out


# -- log records ------------------------------------------------------------------------------

LOG_HEADER = struct.Struct(">BI")
STREAMS = {1: "stdout", 2: "stderr"}
STREAM_IDS = {name: number for number, name in STREAMS.items()}


class MalformedRecords(ValueError):
    pass


def log_record(stream: int, data: bytes) -> bytes:
    return LOG_HEADER.pack(stream, len(data)) + data


def log_records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(stream, bytes) for each record in `data`; MalformedRecords if it is not whole records."""
    at = 0
    while at < len(data):
        if at + LOG_HEADER.size > len(data):
            raise MalformedRecords("a record header is cut short")
        stream, length = LOG_HEADER.unpack_from(data, at)
        start = at + LOG_HEADER.size
        if stream not in STREAMS or start + length > len(data):
            raise MalformedRecords("a record is malformed or cut short")
        yield stream, data[start : start + length]
        at = start + length


def pack_blobs(blobs: Sequence[bytes]) -> bytes:
    """put_many's body: each blob's length, then its bytes."""
    return b"".join(_BLOB_LENGTH.pack(len(blob)) + blob for blob in blobs)


def unpack_blobs(body: bytes) -> list[bytes]:
    """The blobs of a put_many body; ValueError if it is not one."""
    blobs, at = [], 0
    with memoryview(body) as view:
        while at < len(view):
            if at + _BLOB_LENGTH.size > len(view):
                raise ValueError("a blob's length is cut short")
            (length,) = _BLOB_LENGTH.unpack_from(view, at)
            at += _BLOB_LENGTH.size
            if at + length > len(view):
                raise ValueError("a blob is cut short")
            blobs.append(bytes(view[at : at + length]))
            at += length
    return blobs
