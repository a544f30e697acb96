"""Runners' heartbeats: their own short-lived stream, heard live.

A heartbeat says "alive now, with this capacity"; it is worth nothing a minute later. Kept in
the events stream they would be most of the log and never go away, so they have a stream of
their own, `<namespace>.heartbeats`, that RabbitMQ truncates past `FREIGHT_HEARTBEAT_RETENTION`.
Its readers (the scheduler, the API's runner board) listen from "now" on: what a runner said
before a reader started proves nothing about whether it is alive, so none is replayed.

The listener runs on its own thread and connection and keeps only each runner's latest
heartbeat; the reader takes them on its own thread, between batches, so its state stays
single-threaded. While the listener is not subscribed (the broker restarting, a reconnect's
backoff) heartbeats go unheard, which is no runner's silence: `listening_since` says since when
they can be heard (None: not now), for a judge of silence to count from no earlier.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pika

from freight_server.shared.bus import AMQP_ERRORS, Topology, connect
from freight_server.shared.events import Event, MalformedEvent, decode

log = logging.getLogger(__name__)


class HeartbeatListener:
    def __init__(self, amqp_url: str, topology: Topology, role: str):
        self._url = amqp_url
        self._topology = topology
        self._role = role
        self._lock = threading.Lock()
        self._latest: dict[str, Event] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since: float | None = None  # time.monotonic() of the current subscription

    def take(self) -> list[Event]:
        """Each runner's latest heartbeat heard since the last call (starts listening at the
        first call: a process that never reads them never connects)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._listen, name=f"{self._role}-heartbeats", daemon=True
            )
            self._thread.start()
        with self._lock:
            taken, self._latest = list(self._latest.values()), {}
        return taken

    def listening_since(self) -> float | None:
        """When (time.monotonic) the current subscription began; None while there is none."""
        return self._since

    def close(self) -> None:
        self._stop.set()

    def _listen(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._consume()
                backoff = 0.2
            except AMQP_ERRORS as exc:
                log.warning("%s: heartbeats interrupted (%r); retrying", self._role, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _consume(self) -> None:
        connection = connect(self._url, self._topology.connection_name(f"{self._role}-heartbeats"))
        try:
            channel = connection.channel()
            self._topology.declare(channel)
            channel.basic_qos(prefetch_count=100)
            channel.basic_consume(
                self._topology.heartbeats_stream,
                self._on_message,
                arguments={"x-stream-offset": "next"},
            )
            self._since = time.monotonic()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            self._since = None
            if connection.is_open:
                connection.close()

    def _on_message(
        self, channel: Any, method: Any, _properties: pika.BasicProperties, body: bytes
    ) -> None:
        channel.basic_ack(method.delivery_tag)
        try:
            event = decode(body)
            runner_id = str(event.data["runner"])
        except (MalformedEvent, KeyError) as exc:
            log.warning("%s: a heartbeat that cannot be read, ignored: %s", self._role, exc)
            return
        with self._lock:
            self._latest[runner_id] = event
