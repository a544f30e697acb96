"""`GET /jobs/{id}/logs`: what a job printed, from the filestore, where its runner ships it.

`?stream=stdout|stderr` (both by default, interleaved in the order written), `?tail=N` (the last N
lines), `?follow=true` (the response goes on as the job prints and ends when the job ends). Plain
text, or with `Accept: text/event-stream` one `data:` event per line and a final `event: end`.
The log is read a bounded piece at a time, so a job printing 100 MB costs no more memory here
than one printing a line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import falcon

from freight_server.services.api.auth import caller_of
from freight_server.services.api.errors import ApiError, bad_request
from freight_server.services.api.jobs import ApiDeps, find_job
from freight_server.shared.filestore_protocol import STREAMS, log_records
from freight_server.shared.jobs import JobView
from freight_server.shared.rpc import TransferError

MAX_TAIL = 100_000
MAX_LINE = 64 * 1024  # an event carries at most this much of a line without a newline
POLL_SECONDS = 0.25

Record = tuple[int, bytes]


class JobLogs:
    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        view = find_job(self._deps, job_id, caller_of(req))
        streams = _streams(req.get_param("stream"))
        tail = _tail(req.get_param("tail"))
        follow = req.get_param_as_bool("follow") or False
        start = self._start(view, streams, tail)  # before the 200, so a 503 can still be said
        records = self._records(view, streams, start, follow)
        if "text/event-stream" in (req.get_header("Accept") or ""):
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            resp.stream = _events(records)
        else:
            resp.content_type = "text/plain; charset=utf-8"
            resp.stream = (body for _, body in records)

    def _start(self, view: JobView, streams: list[str], tail: int | None) -> tuple[int, int]:
        """Where to begin in the current attempt's log: its start, or where its tail begins."""
        filestore = self._deps.filestore
        assert filestore is not None
        if view.attempt == 0:
            return 0, 0
        try:
            if tail is None:
                filestore.log_state(view.job_id, view.attempt)  # the filestore answers
                return 0, 0
            return filestore.tail_log(view.job_id, view.attempt, tail, streams)
        except TransferError as exc:
            raise ApiError(
                falcon.HTTP_503,
                "unavailable",
                f"the filestore did not answer: {exc}",
                headers={"Retry-After": "2"},
            ) from None

    def _records(
        self, view: JobView, streams: list[str], start: tuple[int, int], follow: bool
    ) -> Iterator[Record]:
        filestore = self._deps.filestore
        assert filestore is not None
        job_id, attempt = view.job_id, view.attempt
        (offset, skip), seen_the_end = start, view.status.is_terminal
        while True:
            if attempt == 0:  # not assigned yet: nothing printed
                if not follow or seen_the_end:
                    return
            else:
                chunk = filestore.read_log(job_id, attempt, offset, streams)
                for stream, body in log_records(chunk.records):
                    body, skip = body[skip:], 0
                    if body:
                        yield stream, body
                if chunk.next != offset:
                    offset = chunk.next
                    continue  # there may be more at once
                # A closed log has all this attempt printed, but a follower ends with the job.
                if not follow or seen_the_end:
                    return
            time.sleep(POLL_SECONDS)
            current = self._deps.jobs.get(job_id) or view
            seen_the_end = current.status.is_terminal  # then one last read, and done
            if current.attempt != attempt:  # retried, or assigned at last: its own log
                attempt, offset, skip = current.attempt, 0, 0


def _events(records: Iterator[Record]) -> Iterator[bytes]:
    """Server-sent events: one per line of output, then `end`."""
    partial = {stream: bytearray() for stream in STREAMS}
    for stream, body in records:
        line = partial[stream]
        line += body
        while (newline := line.find(b"\n")) != -1:
            yield _event(line[:newline])
            del line[: newline + 1]
        if len(line) > MAX_LINE:
            yield _event(line)
            line.clear()
    for line in partial.values():
        if line:
            yield _event(line)
    yield b"event: end\ndata: \n\n"


def _event(line: bytes | bytearray) -> bytes:
    text = bytes(line).decode("utf-8", "replace").replace("\r", "")
    return f"data: {text}\n\n".encode()


def _streams(value: str | None) -> list[str]:
    if value is None or value == "":
        return list(STREAMS.values())
    if value not in STREAMS.values():
        raise bad_request(f"stream must be 'stdout' or 'stderr', got {value!r}")
    return [value]


def _tail(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        lines = int(value)
    except ValueError:
        raise bad_request(f"tail must be a number of lines, got {value!r}") from None
    if not 0 <= lines <= MAX_TAIL:
        raise bad_request(f"tail must be between 0 and {MAX_TAIL}")
    return lines
