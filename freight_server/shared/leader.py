"""One active instance, the others on standby, with RabbitMQ as the arbiter.

The lock is an exclusive queue: RabbitMQ lets only one connection declare it, and deletes it the
moment that connection dies (a killed process closes its socket; a frozen one misses heartbeats).
A standby retries the declaration every `retry_interval` and takes over as soon as it succeeds.
A leader whose work dies releases the lock at once (`lead_while_holding`): a process that holds
the lock but no longer does the work would keep every standby waiting for ever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pika.exceptions

from freight_server.shared.bus import AMQP_ERRORS, Topology, connect

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
        self.role = role
        self._queue = f"{topology.namespace}.{role}.leader"
        self._retry_interval = retry_interval
        self._heartbeat = heartbeat

    def hold(
        self,
        stop: threading.Event,
        lead: threading.Event,
        lost: threading.Event,
        release: threading.Event | None = None,
    ) -> None:
        """Acquire the lock, set `lead` while holding it and `lost` when it is gone; returns
        when `stop` or `release` is set or the lock is lost. Meant for its own thread."""
        released = release or threading.Event()

        def done() -> bool:
            return stop.is_set() or released.is_set()

        waiting_logged = False
        while not done():
            try:
                connection = connect(
                    self._url,
                    self._topology.connection_name(f"{self.role}-leader"),
                    heartbeat=self._heartbeat,
                )
            except AMQP_ERRORS as exc:
                log.warning("%s: cannot reach RabbitMQ for the leader lock (%r)", self.role, exc)
                stop.wait(self._retry_interval)
                continue
            try:
                connection.channel().queue_declare(self._queue, exclusive=True, auto_delete=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != RESOURCE_LOCKED:
                    raise
                if not waiting_logged:
                    log.info("%s: another instance is active; standing by", self.role)
                    waiting_logged = True
                _close(connection)
                stop.wait(self._retry_interval)
                continue
            except AMQP_ERRORS as exc:
                log.warning("%s: leader lock failed (%r)", self.role, exc)
                _close(connection)
                stop.wait(self._retry_interval)
                continue
            log.info("%s: this instance is now the active one", self.role)
            lead.set()
            try:
                while not done():
                    connection.process_data_events(time_limit=self._retry_interval)
            except AMQP_ERRORS as exc:
                log.error("%s: lost the leader lock (%r); stepping down", self.role, exc)
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


def lead_while_holding(
    lock: LeaderLock,
    stop: threading.Event,
    lead: Callable[[threading.Event], None],
    *,
    backoff: float = 5.0,
    fatal: tuple[type[Exception], ...] = (),
) -> None:
    """Run `lead(until)` whenever this process holds `lock`, until `stop` is set; `until` is set
    when the lock is lost or `stop` is. Should `lead` die of an error, the lock is released so
    a standby takes over, and this process contends again after `backoff`; an error in `fatal`
    is raised instead (the process cannot do this work at all)."""
    while not stop.is_set():
        held, lost, release = threading.Event(), threading.Event(), threading.Event()
        holder = threading.Thread(
            target=lock.hold,
            args=(stop, held, lost, release),
            name=f"{lock.role}-lock",
            daemon=True,
        )
        holder.start()
        while not (stop.is_set() or held.wait(0.5)):
            pass
        died = False
        try:
            if held.is_set():
                lead(lost)
        except fatal:
            raise
        except Exception:
            log.exception("%s: the active instance's work died; releasing the lock", lock.role)
            died = True
        finally:
            release.set()
            holder.join()
        if died:
            stop.wait(backoff)
