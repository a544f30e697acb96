"""The SDK's retries (freight/retry.py) against a real HTTP server on 127.0.0.1 that is busy
for a while: both clients wait what Retry-After says, retry only what is safe to repeat, and
give up within their bounds with the server's message."""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from freight import Client, Unavailable
from freight.aio import AsyncClient
from freight.calls import IDEMPOTENCY_HEADER
from freight.retry import RetryPolicy, parse_retry_after

JOB_ID = "0d6c1111-1111-4111-8111-111111111111"
JOB = {"job_id": JOB_ID, "id": JOB_ID, "command": "true", "status": "QUEUED", "gpus": 0}


class Busy:
    """What the server does: 503 with `retry_after` for the first `busy_for` requests."""

    def __init__(self, busy_for: int, retry_after: str = "2"):
        self.busy_for = busy_for
        self.retry_after = retry_after
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, idempotency key


@pytest.fixture
def server() -> Iterator[tuple[str, Busy]]:
    busy = Busy(busy_for=2)

    class Handler(BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            busy.requests.append((self.command, self.path, self.headers.get(IDEMPOTENCY_HEADER)))
            if len(busy.requests) <= busy.busy_for:
                self.reply(503, {"error": "overloaded", "message": "the API is busy"})
            else:
                self.reply(201 if self.command == "POST" else 200, JOB)

        do_GET = do_POST = do_DELETE = answer

        def reply(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", busy.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", busy
    httpd.shutdown()
    httpd.server_close()


class Clock:
    """Time that passes only when the client sleeps: the test never waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def policy(self, **bounds: float) -> RetryPolicy:
        return RetryPolicy(clock=lambda: self.now, jitter=lambda low, high: high, **bounds)  # type: ignore[arg-type]


def test_a_read_waits_what_retry_after_says_then_succeeds(server):
    url, busy = server
    clock = Clock()
    with Client(url, retry=clock.policy(backoff=0.5), sleep=clock.sleep) as client:
        assert client.get(JOB_ID).job_id == JOB_ID
    assert len(busy.requests) == 3
    # Retry-After: 2, plus at most one backoff step of spread so clients don't return in step.
    assert clock.slept == [2.5, 2.5]


def test_a_submission_is_retried_with_the_same_idempotency_key(server):
    url, busy = server
    clock = Clock()
    with Client(url, retry=clock.policy(), sleep=clock.sleep) as client:
        assert client.submit("true").job_id == JOB_ID
    keys = {key for _, _, key in busy.requests}
    assert len(busy.requests) == 3 and len(keys) == 1 and None not in keys


def test_retry_after_as_an_http_date(server):
    url, busy = server
    busy.retry_after = formatdate(1_000_000_007.0, usegmt=True)
    assert parse_retry_after(busy.retry_after, now=lambda: 1_000_000_000.0) == 7.0
    assert parse_retry_after("soon") is None


def test_without_retry_after_the_waits_grow_with_full_jitter(server):
    url, busy = server
    busy.busy_for, busy.retry_after = 3, ""
    clock = Clock()
    with Client(url, retry=clock.policy(backoff=1.0, max_backoff=3.0), sleep=clock.sleep) as client:
        client.cancel(JOB_ID)
    assert clock.slept == [1.0, 2.0, 3.0]  # the ceilings (the jitter here takes the top)


def test_gives_up_after_the_retries_with_the_servers_message(server):
    url, busy = server
    busy.busy_for = 100
    clock = Clock()
    client = Client(url, retry=clock.policy(retries=2), sleep=clock.sleep)
    with pytest.raises(Unavailable, match=r"the API is busy \(gave up after 3 tries") as error:
        client.get(JOB_ID)
    assert error.value.status == 503 and len(busy.requests) == 3


def test_gives_up_when_the_next_wait_would_pass_retry_for(server):
    url, busy = server
    busy.busy_for, busy.retry_after = 100, "30"
    clock = Clock()
    client = Client(url, retry=clock.policy(retry_for=60.0), sleep=clock.sleep)
    with pytest.raises(Unavailable, match="FREIGHT_RETRY_FOR"):
        client.get(JOB_ID)
    # Two waits of 30 s (the most a wait may be) fit in 60 s; a third would not.
    assert clock.slept == [30.0, 30.0] and len(busy.requests) == 3


def test_a_connection_refused_is_retried_then_reported():
    clock = Clock()
    client = Client("http://127.0.0.1:1", retry=clock.policy(retries=3), sleep=clock.sleep)
    with pytest.raises(Exception, match="cannot reach Freight.*gave up after 4 tries"):
        client.get(JOB_ID)
    assert len(clock.slept) == 3


def test_the_retry_policy_reads_the_environment():
    policy = RetryPolicy.from_env({"FREIGHT_RETRIES": "0", "FREIGHT_RETRY_FOR": "9"})
    assert (policy.retries, policy.retry_for) == (0, 9.0)


def test_the_async_client_retries_the_same_way(server):
    url, busy = server
    clock = Clock()

    async def scenario() -> None:
        async with AsyncClient(url, retry=clock.policy(), sleep=clock.async_sleep) as client:
            assert (await client.get(JOB_ID)).job_id == JOB_ID
            busy.requests.clear()
            assert (await client.submit("true", files={"in.txt": b"hello"})).job_id == JOB_ID

    asyncio.run(scenario())
    assert clock.slept == [2.5] * 4
    assert len({key for _, _, key in busy.requests}) == 1


def test_the_async_client_takes_what_the_sync_client_takes():
    assert inspect.signature(AsyncClient.submit).parameters.keys() == (
        inspect.signature(Client.submit).parameters.keys()
    )
