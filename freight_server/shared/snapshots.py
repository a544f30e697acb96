"""Snapshots of the log, so that a service can join after the events stream was truncated.

With a retention (`FREIGHT_LOG_RETENTION`, `FREIGHT_LOG_MAX_BYTES`) RabbitMQ drops the stream's
oldest segments, and a service that starts from nothing can no longer fold every job from its
first event. A snapshot at position P is the events, with their own positions, of every job any
service may still need at P: the unfinished ones and those ended within the files' retention.
Folding a snapshot's events and then the stream from P + 1 gives a projection the state that
folding the whole log would have given it for those jobs — the same events in the same order,
only without the jobs that are over for good.

Snapshots go to their own stream, `<namespace>.snapshots`, in parts of at most PART_EVENTS
events; the last part says how many there are, so a reader takes only a complete snapshot.
The API's projector takes them (it keeps every raw event: freight_server/services/api/snapshots.py);
every projection's consumer restores from the newest one that reaches the stream's first offset.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pika

from freight_server.shared.bus import AMQP_ERRORS, Message, Topology, connect
from freight_server.shared.events import Logged, decode

PART_EVENTS = 500
# A stream that delivers nothing for this long has nothing more to deliver now.
QUIET = 1.0


class LogUnusable(RuntimeError):
    """The log cannot give this projection a complete history: consuming would skip events."""


class LogTruncated(LogUnusable):
    """The events stream no longer starts at its beginning, and no snapshot reaches its start."""


@dataclass
class SnapshotRef:
    """Where a complete snapshot lies in the snapshots stream."""

    snapshot_id: str
    position: int  # the last position of the log it covers
    parts: int
    offset: int  # of its first part


def snapshot_messages(
    topology: Topology, position: int, events: Iterable[tuple[int, Mapping[str, Any]]]
) -> Iterator[Message]:
    """A snapshot at `position` of `events` ((position, envelope), in log order), as the
    messages of its parts."""
    snapshot_id = str(uuid.uuid4())
    chunk: list[dict[str, Any]] = []
    index = 0
    for event_position, envelope in events:
        chunk.append({"position": event_position, "event": envelope})
        if len(chunk) == PART_EVENTS:
            yield _part(topology, snapshot_id, position, index, chunk, last=False)
            chunk, index = [], index + 1
    yield _part(topology, snapshot_id, position, index, chunk, last=True)


def _part(
    topology: Topology,
    snapshot_id: str,
    position: int,
    index: int,
    events: list[dict[str, Any]],
    last: bool,
) -> Message:
    body = {"snapshot": snapshot_id, "position": position, "part": index, "events": events}
    if last:
        body["parts"] = index + 1
    return Message(
        exchange="",
        routing_key=topology.snapshots_stream,
        body=json.dumps(body, separators=(",", ":")).encode(),
        properties=pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent
        ),
    )


def first_offset(amqp_url: str, topology: Topology, name: str) -> int | None:
    """The offset of the oldest event the events stream still holds; None when it is empty."""
    for offset, _ in _stream(amqp_url, topology, topology.events_stream, name, "first"):
        return offset
    return None


def newest_snapshot(
    amqp_url: str, topology: Topology, reaching: int, name: str
) -> SnapshotRef | None:
    """The newest complete snapshot from which the stream goes on: its position + 1 is at or
    past `reaching`, the stream's first offset. Reads the parts' heads only."""
    seen: dict[str, tuple[int, int]] = {}  # snapshot -> (offset of its first part, parts seen)
    best: SnapshotRef | None = None
    for offset, body in _stream(amqp_url, topology, topology.snapshots_stream, name, "first"):
        part = json.loads(body)
        first, count = seen.get(part["snapshot"], (offset, 0))
        if int(part["part"]) != count:
            seen.pop(part["snapshot"], None)  # a part missing: never complete
            continue
        seen[part["snapshot"]] = (first, count + 1)
        position = int(part["position"])
        newer = best is None or position > best.position
        if "parts" in part and position + 1 >= reaching and newer:
            best = SnapshotRef(part["snapshot"], position, count + 1, first)
    return best


def snapshot_events(
    amqp_url: str, topology: Topology, ref: SnapshotRef, name: str
) -> Iterator[list[Logged]]:
    """The snapshot's events, decoded, with their own positions, a part at a time."""
    parts = 0
    for _, body in _stream(amqp_url, topology, topology.snapshots_stream, name, ref.offset):
        part = json.loads(body)
        if part["snapshot"] != ref.snapshot_id:
            continue
        yield [
            Logged(decode(json.dumps(entry["event"]).encode()), int(entry["position"]))
            for entry in part["events"]
        ]
        parts += 1
        if parts == ref.parts:
            return
    raise LogUnusable(f"snapshot {ref.snapshot_id} ended after {parts} of {ref.parts} parts")


def _stream(
    amqp_url: str, topology: Topology, stream: str, name: str, start: str | int
) -> Iterator[tuple[int, bytes]]:
    """(offset, body) of a stream's messages from `start` on, until it goes quiet."""
    connection = connect(amqp_url, topology.connection_name(f"{name}-snapshot-reader"))
    delivered: deque[tuple[int, bytes]] = deque()
    try:
        channel = connection.channel()
        topology.declare(channel)
        channel.basic_qos(prefetch_count=64)

        def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            delivered.append((int((properties.headers or {})["x-stream-offset"]), body))
            channel.basic_ack(method.delivery_tag)

        channel.basic_consume(stream, on_message, arguments={"x-stream-offset": start})
        while True:
            if not delivered:
                connection.process_data_events(time_limit=QUIET)
                if not delivered:
                    return
            yield delivered.popleft()
    finally:
        try:
            if connection.is_open:
                connection.close()
        except AMQP_ERRORS:
            pass
