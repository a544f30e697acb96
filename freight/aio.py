"""The SDK for asyncio: `AsyncClient` has `Client`'s common calls as coroutines, over httpx.

async with AsyncClient() as client:
    job = await client.submit("python train.py", gpus=1, files={"train.py": "./train.py"})
    async for line in client.follow(job.job_id):
        print(line)
    print((await client.wait(job.job_id)).exit_code)

The requests and the reading of their answers are freight/calls.py's, the same as `Client`'s;
retries follow the same RetryPolicy. `wait` polls the API (the job_response listener is
pika's, which blocks).
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from freight import calls
from freight.calls import Call, Cancellation, LineSplitter, Submission
from freight.client import (
    CONNECT_TIMEOUT,
    DEFAULT_URL,
    READ_TIMEOUT,
    STATUS_EVERY,
    Files,
    Progress,
    normalize_url,
    upload_counter,
    uploads_of,
)
from freight.credentials import Credentials
from freight.errors import ConnectionFailed, FreightError, WaitTimedOut
from freight.models import Event, Job, Submitted
from freight.multipart import MultipartBody
from freight.retry import RETRYABLE, RetryPolicy

__all__ = ["AsyncClient"]

R = TypeVar("R")


class AsyncClient:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = READ_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        """As `Client`: the URL and token from the arguments, else FREIGHT_URL/FREIGHT_TOKEN,
        else ~/.config/freight/config; `retry` as Client's."""
        credentials = Credentials(url, token)
        self.url = normalize_url(credentials.url or DEFAULT_URL)
        self._retry = retry if retry is not None else RetryPolicy.from_env()
        self._sleep = sleep
        headers = {"User-Agent": "freight-client"}
        if credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token}"
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- jobs ------------------------------------------------------------------------------

    async def submit(
        self,
        command: str,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        image: str | None = None,
        gpus: int | None = None,
        gpu_memory: int | None = None,
        cpus: float | None = None,
        memory: int | None = None,
        env: Mapping[str, str] | None = None,
        secret_env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        files: Files | None = None,
        on_upload: Progress | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted:
        """As `Client.submit`. Files are read off the event loop, in a thread."""
        submission = Submission.of(locals(), idempotency_key)  # first: only the arguments
        uploads = uploads_of(files)
        if not uploads:
            return await self._call(submission.json_call())

        async def send() -> httpx.Response:
            body = MultipartBody(submission.form(), uploads, upload_counter(on_upload, uploads))
            headers = {**submission.headers, "Content-Type": body.content_type}
            if body.length is not None:  # else httpx sends it chunked
                headers["Content-Length"] = str(body.length)
            return await self._send_once(
                "POST",
                "/jobs",
                content=_off_the_loop(iter(body)),
                headers=headers,
                timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
            )

        replayable = all(u.replayable for u in uploads)
        response = await (self._retrying(send) if replayable else send())
        return Submitted.from_json(self._body(response, "POST", "/jobs"))

    async def get(self, job_id: str) -> Job:
        return await self._call(calls.get_job(job_id))

    async def list(
        self,
        status: str | Iterable[str] | None = None,
        *,
        page_size: int = 100,
        id_prefix: str | None = None,
    ) -> builtins.list[Job]:
        """As `Client.list`, every page gathered into one list."""
        page = await self._call(calls.jobs_page(status, page_size, id_prefix))
        jobs = list(page.jobs)
        while page.next is not None:
            page = await self._call(calls.next_jobs_page(page.next))
            jobs += page.jobs
        return jobs

    async def cancel(self, job_id: str) -> Cancellation:
        return await self._call(calls.cancel_job(job_id))

    async def events(self, job_id: str) -> builtins.list[Event]:
        return await self._call(calls.job_events(job_id))

    async def usage(self, owner: str | None = None) -> builtins.list[dict[str, Any]]:
        return await self._call(calls.owner_usage(owner))

    # -- logs ------------------------------------------------------------------------------

    async def logs(self, job_id: str, stream: str | None = None, tail: int | None = None) -> str:
        chunks = [c async for c in self.log_stream(job_id, stream=stream, tail=tail)]
        return b"".join(chunks).decode(errors="replace")

    async def follow(
        self, job_id: str, stream: str | None = None, tail: int | None = None
    ) -> AsyncIterator[str]:
        lines = LineSplitter()
        async for chunk in self.log_stream(job_id, stream=stream, tail=tail, follow=True):
            for line in lines.feed(chunk):
                yield line
        for line in lines.rest():
            yield line

    async def log_stream(
        self,
        job_id: str,
        *,
        stream: str | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[bytes]:
        call = calls.job_logs(job_id, stream, tail, follow)
        request = self._http.build_request(
            call.method,
            call.path,
            params=call.params,
            headers=call.headers,
            timeout=httpx.Timeout(
                None if follow else self._http.timeout.read, connect=CONNECT_TIMEOUT
            ),
        )
        response = await self._retrying(lambda: self._open(request, call.path))
        try:
            async for chunk in response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise ConnectionFailed(f"the connection to Freight at {self.url} broke: {exc}") from exc
        finally:
            await response.aclose()

    # -- waiting ---------------------------------------------------------------------------

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        on_status: Callable[[Job], None] | None = None,
    ) -> Job:
        """Until the job ends, looking at it now and then; WaitTimedOut after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.1
        while True:
            job = await self.get(job_id)
            if on_status is not None:
                on_status(job)
            if job.finished:
                return job
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimedOut(f"job {job_id} has not ended yet; it goes on running")
            await asyncio.sleep(delay if left is None else max(0.01, min(delay, left)))
            delay = min(delay * 2, STATUS_EVERY)

    # -- HTTP ------------------------------------------------------------------------------

    async def _call(self, call: Call[R]) -> R:
        async def send() -> httpx.Response:
            return await self._send_once(
                call.method, call.path, params=call.params, json=call.json, headers=call.headers
            )

        response = await (self._retrying(send) if call.idempotent else send())
        return call.read(self._body(response, call.method, call.path))

    def _body(self, response: httpx.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise calls.not_json(self.url, method, path, response.status_code) from None

    async def _retrying(self, send: Callable[[], Awaitable[R]]) -> R:
        attempts = self._retry.start()
        while True:
            try:
                return await send()
            except RETRYABLE as exc:
                await self._sleep(attempts.wait_before_retry(exc))

    async def _send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        request = self._http.build_request(method, path, **kwargs)
        response = await self._open(request, path)
        await response.aread()
        return response

    async def _open(self, request: httpx.Request, path: str) -> httpx.Response:
        """Sends the request; the answer's body is left to read, an error's read and raised."""
        try:
            response = await self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
            raise ConnectionFailed(calls.unreachable(self.url)) from exc
        except httpx.TimeoutException as exc:
            raise FreightError(
                f"Freight at {self.url} did not answer {request.method} {path} in time"
            ) from exc
        except httpx.HTTPError as exc:
            raise FreightError(f"request to Freight at {self.url} failed: {exc}") from exc
        if response.status_code >= 400:
            await response.aread()
            await response.aclose()
            raise calls.api_error(
                response.status_code,
                response.reason_phrase,
                response.text,
                response.headers,
                f"{request.method} {path.split('?')[0]}",
            )
        return response


async def _off_the_loop(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A body read from files or a pipe, each read in a thread so the loop never blocks."""
    done = object()
    while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
        yield chunk  # type: ignore[misc]
