"""The log as the fault suite sees it from outside: every message of a stream, read straight from
RabbitMQ, and poison appended the way freight_server/shared/bus.py appends, past every check of
the API."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pika
import pika.exceptions

# Quiet this long on a stream read from its start: its end has been reached. (Read it once its
# writers have stopped: the heartbeats never pause that long.)
QUIET = 1.5
READ_FOR = 60.0


@dataclass(frozen=True)
class Poison:
    what: str
    body: bytes


def read_stream(amqp_url: str, stream: str) -> list[tuple[int, bytes]]:
    """Every (offset, body) in `stream`, oldest first; [] if there is no such stream."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        try:
            channel.queue_declare(stream, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return []
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        messages: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + READ_FOR
        for method, properties, body in channel.consume(
            stream, arguments={"x-stream-offset": "first"}, inactivity_timeout=QUIET
        ):
            if method is None:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{stream} was still growing after {READ_FOR:.0f}s")
            messages.append((int(properties.headers["x-stream-offset"]), body))
            channel.basic_ack(method.delivery_tag)
        return messages
    finally:
        if connection.is_open:
            connection.close()


def append_raw(amqp_url: str, stream: str, bodies: Sequence[bytes]) -> None:
    """Append `bodies` as they are, confirmed, persistent, to the default exchange."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(
                "",
                stream,
                body,
                pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=str(uuid.uuid4()),
                ),
                mandatory=True,
            )
    finally:
        if connection.is_open:
            connection.close()


def poison_events(running: dict[str, Any] | None, image: str) -> list[Poison]:
    """Events no service may halt on. `running`: a job of the run now RUNNING, if any, to be
    told it ended with an outcome no version of Freight knows."""
    now = datetime.now(UTC)
    poison = [
        Poison("not JSON", b"\xff\xfe not an event {"),
        Poison("data a list", _envelope("JobSubmitted", str(uuid.uuid4()), now, data=[1, 2, 3])),
        Poison(
            "schema version from the future",
            _envelope("JobSubmitted", str(uuid.uuid4()), now, schema_version=99),
        ),
        Poison(
            "JobFinished for a 300-character job id",
            _envelope(
                "JobFinished",
                "j" * 300,
                now,
                data={"runner": "nobody", "attempt": 1, "exit_code": 0, "outcome": "succeeded"},
            ),
        ),
        Poison(
            "JobSubmitted with a naive occurred_at",
            _envelope(
                "JobSubmitted",
                str(uuid.uuid4()),
                now.replace(tzinfo=None),
                data={
                    "command": ": poison-naive-time; true",
                    "image": image,
                    "gpus": None,
                    "gpu_memory": None,
                    "cpus": None,
                    "memory": None,
                    "env": {},
                    "timeout": None,
                    "max_attempts": 1,
                    "owner": "anonymous",
                },
            ),
        ),
    ]
    if running is not None:
        poison.append(
            Poison(
                f"JobFinished outcome 'exploded' for running job {running['job_id']}",
                _envelope(
                    "JobFinished",
                    running["job_id"],
                    now,
                    data={
                        "runner": running["runner"],
                        "attempt": running["attempt"],
                        "exit_code": 0,
                        "outcome": "exploded",
                        "reason": "poison",
                    },
                ),
            )
        )
    return poison


def _envelope(
    type: str, job_id: str, at: datetime, data: Any = None, schema_version: int = 1
) -> bytes:
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": type,
            "job_id": job_id,
            "occurred_at": at.isoformat(),
            "producer": "fault-suite",
            "schema_version": schema_version,
            "data": {} if data is None else data,
        }
    ).encode()
