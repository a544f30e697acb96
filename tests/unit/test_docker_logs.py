"""The engine's output streams parsed in blocks: its log (each write stamped) and an attached
connection (raw writes), whatever the block boundaries."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from freight_server.services.runner.docker_logs import read_attached, read_output


def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def response(body: bytes, block: int, chunked: bool = False) -> SimpleNamespace:
    """What `requests` hands over with stream=True, read `block` bytes at a time."""
    if chunked:
        pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    source = io.BytesIO(body)
    reader = SimpleNamespace(read1=lambda _size: source.read(block))
    headers = {"Transfer-Encoding": "chunked"} if chunked else {}
    return SimpleNamespace(raw=SimpleNamespace(_fp=SimpleNamespace(fp=reader)), headers=headers)


@pytest.mark.parametrize("block", [1, 5, 13, 1 << 20])
def test_attached_writes_keep_their_streams_and_order(block):
    body = frame(1, b"out 1\n") + frame(1, b"out 2\n") + frame(2, b"err\n") + frame(1, b"x" * 40)

    pieces = [(p.stream, p.data) for p in read_attached(response(body, block))]

    joined: list[tuple[int, bytes]] = []
    for stream, data in pieces:  # consecutive writes to one stream may come as one piece
        if joined and joined[-1][0] == stream:
            joined[-1] = (stream, joined[-1][1] + data)
        else:
            joined.append((stream, data))
    assert joined == [(1, b"out 1\nout 2\n"), (2, b"err\n"), (1, b"x" * 40)]


@pytest.mark.parametrize("block", [3, 1 << 20])
def test_logged_writes_lose_their_stamps_and_skip_what_was_had(block):
    body = (
        frame(1, b"2026-01-02T03:04:05.000000001Z first\n")
        + frame(2, b"2026-01-02T03:04:05.5Z second\n")
        + frame(1, b"2026-01-02T03:04:06Z third\n")
    )
    stamp = 1767323045  # 2026-01-02T03:04:05Z

    everything = [(p.stream, p.data) for p in read_output(response(body, block, True), None)]
    after_first = [p.data for p in read_output(response(body, block, True), (stamp, 1))]

    assert everything == [(1, b"first\n"), (2, b"second\n"), (1, b"third\n")]
    assert after_first == [b"second\n", b"third\n"]
