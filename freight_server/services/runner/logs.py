"""A running job's output, shipped to the filestore as the container writes it: a batch goes once
BATCH_BYTES are waiting or BATCH_SECONDS after the first of them, whichever comes first, so the
API can serve it live. While one batch is on its way the next accumulates (up to BUFFER_BYTES,
then the follower waits on the engine, which keeps its own log): a job printing fast costs few
round trips, and memory stays bounded whatever it prints.

A new attempt's log is made by its first batch: a job that prints nothing costs the filestore
nothing (`wrote_nothing`). A runner that restarts and adopts the container asks the filestore how
much it already has and skips that much. A log is closed once the output ends, before the job
does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from freight_server.services.runner.executor import Attached, ContainerFiles, ExecutorError
from freight_server.shared.filestore_client import FilestoreClient
from freight_server.shared.filestore_protocol import log_record
from freight_server.shared.rpc import RemoteError, TransferError

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH_BYTES = 64 * 1024
BATCH_SECONDS = 0.25
BUFFER_BYTES = 4 * 1024 * 1024
RECORD_BYTES = 64 * 1024  # a longer write is split over records
FOLLOW_GRACE = 10.0  # the engine silent this long after the job's end: its stream is done


@dataclass(frozen=True)
class AttemptLog:
    job_id: str
    attempt: int


class _Abandoned(Exception):
    """The job ended but the engine's stream did not: what there is gets shipped."""


class OutputShipper:
    def __init__(
        self,
        container: ContainerFiles,
        filestore: FilestoreClient,
        attempt_log: AttemptLog,
        deadline: float,
        adopted: bool = False,
        attached: Attached | None = None,
    ):
        self._container = container
        self._attached = attached  # the container's writes, attached to before its start
        self._filestore = filestore
        self._log = attempt_log
        self._deadline = deadline  # seconds the filestore may be away before output is dropped
        self._pending = bytearray()  # framed records not yet sent
        self._first_pending_at = 0.0
        self._ended = False  # the follower has nothing more to add
        self._changed = threading.Condition()
        # (log size, output bytes to skip): asked of the filestore for an adopted attempt only
        self._adopted = adopted
        self._resume: tuple[int, int] | None = None if adopted else (0, 0)
        self._resumed = threading.Event()
        if not adopted:
            self._resumed.set()
        self._sent = False  # a batch went: the log exists
        self._waiting_since: float | None = None  # the follower waits on the engine since
        self._abandoned = threading.Event()
        self._gave_up = False
        self.error: str | None = None
        # Started by the first output (an adopted attempt's at once: it asks what was shipped).
        self._shipper = threading.Thread(target=self._ship, name="ship-output", daemon=True)

    def start(self, container_id: str) -> OutputShipper:
        threading.Thread(
            target=self._follow, args=(container_id,), name="follow-output", daemon=True
        ).start()
        if self._adopted:
            self._shipper.start()
        return self

    def finish(self, timeout: float) -> str | None:
        """Wait for the output to be shipped and the log closed (the container has exited);
        returns what went wrong, if anything."""
        # The engine may still be delivering a backlog; a stream that has gone silent, though,
        # belongs to a container whose end was not seen (it still runs): close what there is.
        while not self._ended_event():
            waiting_since = self._waiting_since
            if waiting_since is not None and time.monotonic() - waiting_since > FOLLOW_GRACE:
                self._abandoned.set()
                self._end()
                break
        with self._changed:
            shipping = self._shipper.ident is not None
        if shipping:
            self._shipper.join(timeout)
            if self._shipper.is_alive():
                return f"its output was still being saved after {timeout:g}s"
        return self.error

    # -- following the engine ----------------------------------------------------------------

    def _follow(self, container_id: str) -> None:
        try:
            self._resumed.wait()
            if self._resume is None:
                return  # the log is complete already, or cannot be written
            writes = self._attached or self._container.follow_output(container_id)
            self._relay(iter(writes), skip=self._resume[1])
        except _Abandoned:
            pass
        except ExecutorError as exc:
            self.error = f"its output could not be followed: {exc}"
        finally:
            self._end()

    def _relay(self, writes: Iterator[tuple[int, bytes]], skip: int) -> None:
        """Buffer the writes past their first `skip` bytes (shipped before a restart)."""
        while True:
            self._waiting_since = time.monotonic()
            write = next(writes, None)
            self._waiting_since = None
            if write is None:
                return
            stream, data = write
            cut = min(skip, len(data))
            data, skip = data[cut:], skip - cut
            if data:
                self._add(stream, data)

    def _add(self, stream: int, data: bytes) -> None:
        with self._changed:
            while len(self._pending) >= BUFFER_BYTES:
                if self._abandoned.is_set():
                    raise _Abandoned
                self._changed.wait(1.0)
            if not self._pending:
                self._first_pending_at = time.monotonic()
            if self._shipper.ident is None:
                self._shipper.start()
            for start in range(0, len(data), RECORD_BYTES):
                self._pending += log_record(stream, data[start : start + RECORD_BYTES])
            self._changed.notify_all()

    def _end(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _ended_event(self) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._ended, timeout=1.0)

    # -- shipping to the filestore -------------------------------------------------------------

    @property
    def wrote_nothing(self) -> bool:
        """The attempt (a new one, its output shipped) printed nothing: it has no log."""
        return not self._adopted and not self._sent and self.error is None

    def _ship(self) -> None:
        if self._adopted:
            job_id, attempt = self._log.job_id, self._log.attempt
            state = self._call(lambda: self._filestore.log_state(job_id, attempt))
            if state is not None and not state["closed"]:
                self._resume = int(state["size"]), int(state["payload"])
            self._resumed.set()
        if self._resume is None:
            return
        size = self._resume[0]
        while True:
            records, last = self._next_batch()
            if records:
                size = self._send(records, size)
                self._sent = True
            if last:
                break
        if self._adopted or self._sent:
            self._call(lambda: self._filestore.close_log(self._log.job_id, self._log.attempt))

    def _next_batch(self) -> tuple[bytes, bool]:
        """Wait until a batch is due; take all that is pending. True once nothing more comes."""
        with self._changed:
            while not self._ended and len(self._pending) < BATCH_BYTES:
                if self._pending:
                    due = self._first_pending_at + BATCH_SECONDS - time.monotonic()
                    if due <= 0:
                        break
                    self._changed.wait(due)
                else:
                    self._changed.wait()
            records, ended = bytes(self._pending), self._ended
            self._pending.clear()
            self._changed.notify_all()
        return records, ended

    def _send(self, records: bytes, size: int) -> int:
        appended = self._call(
            lambda: self._filestore.append_log(self._log.job_id, self._log.attempt, size, records)
        )
        return size if appended is None else appended

    def _call(self, request: Callable[[], T]) -> T | None:
        """Retry while the filestore is away, up to the deadline; then give up on the output."""
        if self._gave_up:
            return None
        deadline = time.monotonic() + self._deadline
        pause = 0.2
        while True:
            try:
                return request()
            except RemoteError as exc:
                self._give_up(f"the filestore refused its output: {exc}")
                return None
            except TransferError as exc:
                if time.monotonic() + pause >= deadline:
                    self._give_up(f"the filestore did not take its output: {exc}")
                    return None
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _give_up(self, error: str) -> None:
        self.error, self._gave_up = error, True
        log.warning("job %s: %s", self._log.job_id, error)
