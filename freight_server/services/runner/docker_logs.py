"""The engine's log stream, read fast: what a container wrote, as (stream, bytes) pieces.

The engine sends each write it logged as one HTTP chunk holding a frame: the stream (1 byte),
3 zero bytes, the length (4 bytes), then "<RFC 3339 time> <bytes>". Reading that one chunk at a
time costs a Python round per line a job prints; here the socket is read in blocks, the chunked
framing undone in bulk, and consecutive writes to one stream joined into one piece.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Moment = tuple[int, int]  # the engine's time of a write: seconds and nanoseconds since the epoch
BLOCK = 1024 * 1024
MAX_PIECE = 64 * 1024


@dataclass(frozen=True)
class OutputPiece:
    stream: int  # 1 stdout, 2 stderr
    data: bytes  # one or more consecutive writes to that stream
    at: Moment  # when the engine logged the last of them


def read_output(response: Any, after: Moment | None) -> Iterator[OutputPiece]:
    """The pieces of a `/containers/{id}/logs?timestamps=1` response (a `requests` response
    opened with stream=True), skipping writes logged at or before `after`."""
    frames = _Frames(after)
    for block in _body(response):
        yield from frames.parse(block)


def read_attached(response: Any) -> Iterator[OutputPiece]:
    """The pieces of an `/containers/{id}/attach?stream=1` connection (a `requests` response,
    upgraded, opened with stream=True): the same frames without the time, each write as the
    engine copied it (a block of up to 32 KiB, not a line)."""
    frames = _Frames(after=None, stamped=False)
    for block in _body(response):
        yield from frames.parse(block)


def _body(response: Any) -> Iterator[bytes]:
    """The body as it arrives, in blocks of whatever is there."""
    source = getattr(getattr(response.raw, "_fp", None), "fp", None)
    if source is None:  # not the HTTP client this was written against: the slow, sure way
        while block := response.raw.read1(BLOCK):
            yield block
        return
    chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
    dechunker = _Dechunker() if chunked else None
    while not (dechunker and dechunker.done) and (block := source.read1(BLOCK)):
        data = dechunker.feed(block) if dechunker else block
        if data:
            yield data


class _Dechunker:
    """HTTP/1.1 chunked transfer coding, undone over whatever blocks arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._left = 0  # bytes of the current chunk still to come
        self._crlf = False  # the CRLF after a chunk's data is still to come
        self.done = False

    def feed(self, block: bytes) -> bytes:
        self._buffer += block
        out = bytearray()
        while self._buffer and not self.done:
            if self._left:
                taken = self._buffer[: self._left]
                out += taken
                del self._buffer[: len(taken)]
                self._left -= len(taken)
                self._crlf = self._left == 0
            elif self._crlf:
                if len(self._buffer) < 2:
                    break
                del self._buffer[:2]
                self._crlf = False
            else:
                end = self._buffer.find(b"\r\n")
                if end == -1:
                    break
                size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
                del self._buffer[: end + 2]
                self._left, self.done = size, size == 0
        return bytes(out)


class _Frames:
    def __init__(self, after: Moment | None, stamped: bool = True):
        self._buffer = bytearray()
        self._after = after
        self._stamped = stamped  # each frame's bytes begin with the time of the write

    def parse(self, block: bytes) -> Iterator[OutputPiece]:
        self._buffer += block
        buffer, used = self._buffer, 0
        stream, pending, stamp = 0, bytearray(), b""
        while len(buffer) - used >= 8:
            length = int.from_bytes(buffer[used + 4 : used + 8], "big")
            if len(buffer) - used - 8 < length:
                break
            kind = 2 if buffer[used] == 2 else 1
            frame = buffer[used + 8 : used + 8 + length]
            used += 8 + length
            space = frame.find(b" ") if self._stamped else -1
            if self._after is not None and moment_of(frame[:space]) <= self._after:
                continue  # logged before what the caller already has
            data = frame[space + 1 :]
            if pending and (kind != stream or len(pending) + len(data) > MAX_PIECE):
                yield OutputPiece(stream, bytes(pending), self._moment(stamp))
                pending = bytearray()
            stream, stamp = kind, bytes(frame[:space]) if self._stamped else b""
            pending += data
        del buffer[:used]
        if pending:
            yield OutputPiece(stream, bytes(pending), self._moment(stamp))

    def _moment(self, stamp: bytes) -> Moment:
        return moment_of(stamp) if self._stamped else (0, 0)


def moment_of(stamp: bytes | bytearray) -> Moment:
    """RFC 3339 with up to nanoseconds ("2026-01-02T03:04:05.123456789Z") as (seconds, ns)."""
    whole, _, rest = bytes(stamp).decode().partition(".")
    fraction = rest.rstrip("Z")
    seconds = int(datetime.fromisoformat(whole.rstrip("Z")).replace(tzinfo=UTC).timestamp())
    return seconds, int((fraction + "000000000")[:9])
