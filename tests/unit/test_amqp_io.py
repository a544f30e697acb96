"""The lean connection reads and writes exactly the frames pika's own code does, however the
socket cuts the bytes."""

from __future__ import annotations

import random
from typing import Any

import pika
import pytest
from pika import frame, spec

from freight_server.shared.amqp_io import LeanSelectConnection

FRAME_MAX = 131072


def reader() -> Any:
    connection: Any = object.__new__(LeanSelectConnection)
    connection._frame_buffer = b""
    connection.bytes_received = 0
    connection.processed = []
    connection._process_frame = connection.processed.append
    return connection


def message_frames(channel: int, body: bytes, properties: pika.BasicProperties) -> list[bytes]:
    """What pika's own Connection._send_message would write for one publish."""
    method = spec.Basic.Deliver("ctag", 7, False, "", "queue")
    frames = [
        frame.Method(channel, method).marshal(),
        frame.Header(channel, len(body), properties).marshal(),
    ]
    step = FRAME_MAX - 8
    frames += [
        frame.Body(channel, body[start : start + step]).marshal()
        for start in range(0, len(body), step)
    ]
    return frames


def described(value: Any) -> tuple[Any, ...]:
    if isinstance(value, frame.Body):
        return ("body", value.channel_number, bytes(value.fragment))
    if isinstance(value, frame.Header):
        return ("header", value.channel_number, value.body_size, value.properties.headers)
    if isinstance(value, frame.Method):
        return ("method", value.channel_number, value.method.NAME)
    return (type(value).__name__, value.channel_number)


def stream() -> tuple[bytes, list[tuple[Any, ...]]]:
    rng = random.Random(7)
    frames: list[bytes] = []
    for size in (0, 1, 5000, FRAME_MAX - 8, FRAME_MAX, 3 * FRAME_MAX + 17):
        body = rng.randbytes(size)
        frames += message_frames(1, body, pika.BasicProperties(headers={"seq": size}))
        frames.append(frame.Heartbeat().marshal())
    expected = []
    data = b"".join(frames)
    at = 0
    while at < len(data):
        consumed, value = frame.decode_frame(data[at:])
        expected.append(described(value))
        at += consumed
    return data, expected


@pytest.mark.parametrize("read_size", [1, 3, 7, 8, 4096, 100_000, 131_080, 262_144, 10**7])
def test_frames_are_read_as_pika_reads_them_whatever_the_reads(read_size):
    data, expected = stream()
    connection = reader()
    for start in range(0, len(data), read_size):
        connection._on_data_available(data[start : start + read_size])
    assert [described(v) for v in connection.processed] == expected
    assert connection._frame_buffer == b""
    assert connection.bytes_received == len(data)


def test_random_reads_and_a_frame_cut_anywhere():
    data, expected = stream()
    rng = random.Random(11)
    for _ in range(20):
        connection = reader()
        at = 0
        while at < len(data):
            size = rng.choice([1, 2, 6, 7, 9, 500, 70_000, 140_000, 300_000])
            connection._on_data_available(data[at : at + size])
            at += size
        assert [described(v) for v in connection.processed] == expected


def test_a_bad_frame_end_is_refused():
    bad = bytearray(frame.Body(1, b"x" * 10).marshal())
    bad[-1] = 0
    with pytest.raises(pika.exceptions.InvalidFrameError):
        reader()._on_data_available(bytes(bad))


def test_a_message_is_marshaled_as_pika_marshals_it():
    written: list[bytes] = []
    connection: Any = object.__new__(LeanSelectConnection)
    connection._body_max_length = FRAME_MAX - 8
    connection._output_marshaled_frames = written.extend
    properties = pika.BasicProperties(type="chunk", headers={"seq": 3})
    method = spec.Basic.Publish(exchange="", routing_key="q", mandatory=True)
    for size in (0, 1, FRAME_MAX - 8, FRAME_MAX, 5 * FRAME_MAX + 3):
        body = random.Random(size).randbytes(size)
        written.clear()
        connection._send_message(1, method, (properties, body))
        own = [frame.Method(1, method).marshal(), frame.Header(1, size, properties).marshal()]
        own += [
            frame.Body(1, body[start : start + FRAME_MAX - 8]).marshal()
            for start in range(0, size, FRAME_MAX - 8)
        ]
        assert written == own


def test_the_brokers_protocol_header_is_left_to_pika():
    connection = reader()
    connection._on_data_available(b"AM")
    connection._on_data_available(b"QP\x00\x00\x09\x01")
    assert [type(v).__name__ for v in connection.processed] == ["ProtocolHeader"]
