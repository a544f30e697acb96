"""Admission control: past capacity the API answers 503 at once instead of queueing.

At most `FREIGHT_API_MAX_CONCURRENT` requests are worked on at once in a worker; one more waits
up to `FREIGHT_API_ADMISSION_WAIT` seconds for a turn, then is answered 503 `overloaded` with
`Retry-After`. gunicorn runs more threads (`FREIGHT_API_THREADS`) than that bound, so the excess
reaches this middleware and is answered within that wait instead of waiting, unseen, in
gunicorn's queue while every request's latency grows (connections beyond the thread count still
wait there: the threads are the outer bound).

What a slot covers: the request's handling, from before routing until its responder returns
(falcon's `process_response`), which is all the work of a JSON answer, a submission's body and
its publish included. A streamed body (`resp.stream`: `GET /jobs/{id}/logs?follow`, server-sent
events, file downloads) is sent after that, outside any slot: a follower may last hours while
doing almost no work (a read every 0.25 s), so holding a slot for its life would let a few
followers shut everybody out. Those streams are bounded by the thread count instead. An upload,
though, holds its slot while its body arrives: reading it is the work (a client that stalls is
cut off after FREIGHT_API_CLIENT_TIMEOUT).

Probes are never shed: an orchestrator that sees `/healthz` fail under load would restart the
very process that is coping with it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import falcon
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from freight_server.services.api.errors import overloaded
from freight_server.shared.config import Settings

PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
# A shed request's body up to this size is read and dropped, so that its client, which sends the
# whole body before it reads an answer, gets the 503 and keeps its connection. gunicorn itself
# drains only 64 KiB and otherwise closes the connection after the answer (while its header said
# keep-alive): the client then sees its next request on it fail, or a reset instead of the 503.
# A body above this is left to that, so nobody's upload of gigabytes is read only to be refused.
DRAIN_LIMIT = 1024 * 1024


class Admission:
    """A falcon middleware holding a bounded number of slots (one set per gunicorn worker). It
    goes before any middleware that works on a request, so a shed request costs nothing else: no
    token check, no routing (ClientTimeout, before it, only bounds reads of its body)."""

    def __init__(self, limit: int, wait: float, exempt: Iterable[str] = PROBES):
        self._slots = threading.BoundedSemaphore(limit)
        self._wait = wait
        self._exempt = frozenset(exempt)
        self._lock = threading.Lock()
        self._in_use = 0
        self.shed = 0  # requests answered 503 since start

    @classmethod
    def from_settings(cls, settings: Settings) -> Admission:
        return cls(settings.api_max_concurrent, settings.api_admission_wait)

    @property
    def in_use(self) -> int:
        return self._in_use

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in self._exempt:
            return
        if not self._slots.acquire(timeout=self._wait):
            with self._lock:
                self.shed += 1
            _drain(req)
            raise overloaded()
        with self._lock:
            self._in_use += 1
        req.context.admitted = True

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        # falcon calls this for every request, the shed and the exempt included, before it
        # hands a streamed body to the server: only a request that took a slot gives one back.
        if not getattr(req.context, "admitted", False):
            return
        req.context.admitted = False
        with self._lock:
            self._in_use -= 1
        self._slots.release()


class AdmissionCollector(Collector):
    """/metrics: how full the slots are, and how many requests were shed (per worker)."""

    def __init__(self, admission: Admission):
        self._admission = admission

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        admission = self._admission
        yield GaugeMetricFamily(
            "freight_api_requests_admitted",
            "Requests being worked on now (at most FREIGHT_API_MAX_CONCURRENT).",
            value=admission.in_use,
        )
        yield CounterMetricFamily(
            "freight_api_requests_shed",
            "Requests answered 503 overloaded: no slot came free in FREIGHT_API_ADMISSION_WAIT.",
            value=admission.shed,
        )


def _drain(req: falcon.Request) -> None:
    length = req.content_length
    if not length or length > DRAIN_LIMIT:
        return
    try:
        while req.bounded_stream.read(64 * 1024):
            pass
    except (OSError, ValueError):  # the client went quiet (ClientTimeout) or away
        pass
