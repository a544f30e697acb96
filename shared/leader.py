"""One active instance, the others on standby, with RabbitMQ as the arbiter.

The lock is an exclusive queue: RabbitMQ lets only one connection declare it, and deletes it the
moment that connection dies (a killed process closes its socket; a frozen one misses heartbeats).
A standby retries the declaration every `retry_interval` and takes over as soon as it succeeds.
"""

from __future__ import annotations

import logging
import threading

import pika.exceptions

from shared.bus import AMQP_ERRORS, Topology, connect

log = logging.getLogger(__name__)

RESOURCE_LOCKED = 405


class LeaderLock:
    def __init__(
        self,
        amqp_url: str,
        topology: Topology,
        role: str,
        retry_interval: float = 1.0,
        heartbeat: int = 5,
    ):
        self._url = amqp_url
        self._topology = topology
        self._role = role
        self._queue = f"{topology.namespace}.{role}.leader"
        self._retry_interval = retry_interval
        self._heartbeat = heartbeat

    def hold(self, stop: threading.Event, lead: threading.Event, lost: threading.Event) -> None:
        """Acquire the lock, set `lead` while holding it and `lost` when it is gone; returns
        when `stop` is set or the lock is lost. Meant for its own thread."""
        waiting_logged = False
        while not stop.is_set():
            try:
                connection = connect(
                    self._url,
                    self._topology.connection_name(f"{self._role}-leader"),
                    heartbeat=self._heartbeat,
                )
            except AMQP_ERRORS as exc:
                log.warning("%s: cannot reach RabbitMQ for the leader lock (%r)", self._role, exc)
                stop.wait(self._retry_interval)
                continue
            try:
                connection.channel().queue_declare(self._queue, exclusive=True, auto_delete=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != RESOURCE_LOCKED:
                    raise
                if not waiting_logged:
                    log.info("%s: another instance is active; standing by", self._role)
                    waiting_logged = True
                _close(connection)
                stop.wait(self._retry_interval)
                continue
            except AMQP_ERRORS as exc:
                log.warning("%s: leader lock failed (%r)", self._role, exc)
                _close(connection)
                stop.wait(self._retry_interval)
                continue
            log.info("%s: this instance is now the active one", self._role)
            lead.set()
            try:
                while not stop.is_set():
                    connection.process_data_events(time_limit=self._retry_interval)
            except AMQP_ERRORS as exc:
                log.error("%s: lost the leader lock (%r); stepping down", self._role, exc)
            finally:
                lead.clear()
                lost.set()
                _close(connection)
            return


def _close(connection: pika.BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except AMQP_ERRORS:
        pass
