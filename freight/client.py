"""The Python SDK: `Client` speaks Freight's REST API (and listens on `job_response` to wait).

from freight import Client
client = Client()                       # FREIGHT_URL, else http://127.0.0.1:5000
job = client.submit("python train.py", gpus=1, files={"train.py": "./train.py"})
for line in client.follow(job.job_id):
    print(line)
print(client.wait(job.job_id).exit_code)
"""

from __future__ import annotations

import builtins
import os
import posixpath
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import requests

from freight import calls
from freight.calls import Call, Cancellation, LineSplitter, Submission, segment
from freight.credentials import Credentials
from freight.errors import ConnectionFailed, FreightError, InvalidRequest, Unavailable, WaitTimedOut
from freight.models import Event, FileEntry, Job, Submitted
from freight.multipart import MultipartBody, Upload
from freight.responses import JobResponses, ResponsesUnreachable
from freight.retry import RETRYABLE, RetryPolicy

__all__ = ["Cancellation", "Client", "Files", "Progress"]

DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_RESPONSE_EXCHANGE = "job_response"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
DOWNLOAD_CHUNK = 256 * 1024
# While waiting with a job_response listener we still look at the job this often, to show its
# status as it moves and to survive a response lost with a broker restart.
STATUS_EVERY = 2.0

# Called with (bytes so far, total bytes or None when unknown) as a transfer goes.
Progress = Callable[[int, int | None], None]
# Sources for `submit(files=...)`: {dest: path or binary file} or [(path or file, dest), ...].
Files = Mapping[str, "str | os.PathLike[str] | BinaryIO | bytes"] | Sequence[tuple[Any, str]]

R = TypeVar("R")


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        amqp_url: str | None = None,
        response_exchange: str | None = None,
        timeout: float = READ_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """`retry`: how requests that are safe to repeat are retried after a 503 or a broken
        connection (freight/retry.py; by default 5 retries within 120 s, FREIGHT_RETRIES and
        FREIGHT_RETRY_FOR override them); `RetryPolicy(retries=0)` sends each once."""
        # The argument, else FREIGHT_URL / FREIGHT_TOKEN, else ~/.config/freight/config (0600).
        credentials = Credentials(url, token)
        self.url = normalize_url(credentials.url or DEFAULT_URL)
        self.amqp_url = amqp_url or os.environ.get("FREIGHT_AMQP_URL") or DEFAULT_AMQP_URL
        self.response_exchange = (
            response_exchange
            or os.environ.get("FREIGHT_RESPONSE_EXCHANGE")
            or DEFAULT_RESPONSE_EXCHANGE
        )
        self._timeout = timeout
        self._retry = retry if retry is not None else RetryPolicy.from_env()
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "freight-client"
        if credentials.token:
            self._session.headers["Authorization"] = f"Bearer {credentials.token}"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------------------

    def submit(
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
        """Submit a job; every field of freight.jobspec.JobSpec is a parameter, described
        there (`memory` and `gpu_memory` in MiB). `files` are uploaded to their destination
        path in the job (a relative path lands under the job's working directory, /job).
        `secret_env` is set in the job's environment like `env`, but Freight stores it sealed
        and shows only its names (docs/security.md).

        `idempotency_key` (by default a new random one per call) makes a retry harmless: the
        same key within 24 hours answers with the job it first made. The submission is retried
        with it when Freight answers 503 or the connection breaks; give your own key to retry
        safely across calls, or across restarts of your program."""
        submission = Submission.of(locals(), idempotency_key)  # first: only the arguments
        uploads = uploads_of(files)
        if not uploads:
            return self._call(submission.json_call())

        def send() -> requests.Response:
            body = MultipartBody(submission.form(), uploads, upload_counter(on_upload, uploads))
            return self._send_once(
                "POST",
                "/jobs",
                # A body of known length is sent with Content-Length, else chunked.
                data=body if body.length is not None else iter(body),
                headers={**submission.headers, "Content-Type": body.content_type},
                timeout=(CONNECT_TIMEOUT, None),
            )

        # A file object can be read once; files named by path or given as bytes can be sent again.
        replayable = all(u.replayable for u in uploads)
        response = self._retrying(send) if replayable else send()
        return Submitted.from_json(self._body(response, "POST", "/jobs"))

    def get(self, job_id: str) -> Job:
        return self._call(calls.get_job(job_id))

    def list(
        self,
        status: str | Iterable[str] | None = None,
        *,
        page_size: int = 100,
        id_prefix: str | None = None,
    ) -> Iterator[Job]:
        """Jobs newest first, every page; by default the unfinished ones, `status="all"` for
        every job, or statuses such as ["COMPLETE", "FAILED"]; `id_prefix` keeps the jobs whose
        id starts with it."""
        page = self._call(calls.jobs_page(status, page_size, id_prefix))
        while True:
            yield from page.jobs
            if page.next is None:
                return
            page = self._call(calls.next_jobs_page(page.next))

    def cancel(self, job_id: str) -> Cancellation:
        return self._call(calls.cancel_job(job_id))

    def usage(self, owner: str | None = None) -> builtins.list[dict[str, Any]]:
        """What each owner's ended jobs used: `{owner, jobs, run_seconds, gpu_seconds,
        cpu_seconds}`, most GPU-seconds first; a user sees their own only."""
        return self._call(calls.owner_usage(owner))

    def events(self, job_id: str) -> builtins.list[Event]:
        return self._call(calls.job_events(job_id))

    # -- logs ------------------------------------------------------------------------------

    def logs(self, job_id: str, stream: str | None = None, tail: int | None = None) -> str:
        """The job's output so far, stdout and stderr together unless `stream` picks one."""
        chunks = self.log_stream(job_id, stream=stream, tail=tail)
        return b"".join(chunks).decode(errors="replace")

    def follow(
        self, job_id: str, stream: str | None = None, tail: int | None = None
    ) -> Iterator[str]:
        """The job's output line by line (without newlines) as it runs; ends when the job does."""
        yield from _lines(self.log_stream(job_id, stream=stream, tail=tail, follow=True))

    def log_stream(
        self,
        job_id: str,
        *,
        stream: str | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> Iterator[bytes]:
        """The output as raw chunks as they arrive: any size of log in bounded memory."""
        call = calls.job_logs(job_id, stream, tail, follow)
        # Only the request is retried: a stream cut short ends the iteration with an error.
        response = self._request(
            call.method,
            call.path,
            params=call.params,
            headers=call.headers,
            stream=True,
            timeout=(CONNECT_TIMEOUT, None if follow else self._timeout),
        )
        with response:
            yield from _chunks(response, self.url)

    # -- files -----------------------------------------------------------------------------

    def files_ls(self, job_id: str, path: str = "/job") -> builtins.list[FileEntry]:
        """The top-level entries of a directory in the job's file system."""
        with self._files(job_id, path) as response:
            listing = _listing(response)
            if listing is None:
                raise InvalidRequest(f"{path} is a file, not a directory: download it (files get)")
            return [FileEntry.from_json(e) for e in listing["entries"]]

    def files_get(
        self,
        job_id: str,
        path: str,
        dest: str | os.PathLike[str] | BinaryIO | None = None,
        *,
        on_download: Progress | None = None,
    ) -> int:
        """Download one file of the job to `dest` (a path, by default the file's name here,
        or a binary file object), streamed; returns the number of bytes written. A path is
        written whole or not at all."""
        with self._files(job_id, path) as response:
            if _listing(response) is not None:
                raise InvalidRequest(f"{path} is a directory: list it (files ls), get its files")
            total = _content_length(response)
            name = posixpath.basename(path.rstrip("/")) or "download"
            if dest is None or isinstance(dest, str | os.PathLike):
                local = Path(dest if dest is not None else name).expanduser()
                local = local / name if local.is_dir() else local
                return _save_atomically(response, local, total, on_download, self.url)
            return _copy(response, dest, total, on_download, self.url)

    def _files(self, job_id: str, path: str) -> requests.Response:
        return self._request(
            "GET",
            f"/jobs/{segment(job_id)}/files",
            params={"path": path},
            stream=True,
            timeout=(CONNECT_TIMEOUT, self._timeout),
        )

    # -- waiting ---------------------------------------------------------------------------

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        on_status: Callable[[Job], None] | None = None,
    ) -> Job:
        """Block until the job ends and return it. Listens on `job_response` for this job
        (FREIGHT_AMQP_URL, FREIGHT_RESPONSE_EXCHANGE); polls the API when RabbitMQ can't be
        reached. Raises WaitTimedOut after `timeout` seconds; the job goes on regardless."""
        waiting = _Waiting(self, job_id, timeout, on_status)
        job = waiting.look()
        if job is not None and job.finished:
            return job
        try:
            listener = JobResponses(self.amqp_url, self.response_exchange, job_id)
        except ResponsesUnreachable:
            return waiting.poll()
        try:
            # It may have ended before the queue was bound: look once more now that we listen.
            job = waiting.look()
            if job is not None and job.finished:
                return job
            for message in listener.arrivals(every=waiting.next_look_in()):
                job = waiting.look()
                if message is not None or (job is not None and job.finished):
                    # The response follows the projection, so the job shows as ended at once;
                    # poll briefly in case another API worker answers first.
                    return job if job is not None and job.finished else waiting.poll()
                waiting.check_deadline()
        except ResponsesUnreachable:
            pass
        finally:
            listener.close()
        return waiting.poll()

    # -- HTTP ------------------------------------------------------------------------------

    def _call(self, call: Call[R]) -> R:
        send = self._request if call.idempotent else self._send_once
        response = send(
            call.method, call.path, params=call.params, json=call.json, headers=call.headers
        )
        return call.read(self._body(response, call.method, call.path))

    def _body(self, response: requests.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise calls.not_json(self.url, method, path, response.status_code) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request that is safe to repeat, retried under the client's policy."""
        return self._retrying(lambda: self._send_once(method, path, **kwargs))

    def _retrying(self, send: Callable[[], R]) -> R:
        attempts = self._retry.start()
        while True:
            try:
                return send()
            except RETRYABLE as exc:
                self._sleep(attempts.wait_before_retry(exc))

    def _send_once(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", (CONNECT_TIMEOUT, self._timeout))
        url = self.url + path
        try:
            response = self._session.request(method, url, **kwargs)
        except requests.ConnectionError as exc:
            raise ConnectionFailed(calls.unreachable(self.url)) from exc
        except requests.Timeout as exc:
            raise FreightError(
                f"Freight at {self.url} did not answer {method} {path} in time"
            ) from exc
        except requests.RequestException as exc:
            raise FreightError(f"request to Freight at {self.url} failed: {exc}") from exc
        if response.status_code >= 400:
            with response:
                raise calls.api_error(
                    response.status_code,
                    response.reason,
                    response.text,
                    response.headers,
                    f"{method} {path.split('?')[0]}",
                )
        return response


class _Waiting:
    """The polling side of `Client.wait`: deadline, status callbacks, tolerant looks."""

    def __init__(
        self,
        client: Client,
        job_id: str,
        timeout: float | None,
        on_status: Callable[[Job], None] | None,
    ):
        self._client = client
        self._job_id = job_id
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._on_status = on_status
        self._seen_once = False

    def look(self) -> Job | None:
        """The job now, or None when the API is briefly away (a long wait outlives restarts);
        the first look raises, so a wrong id or URL fails at once."""
        try:
            job = self._client.get(self._job_id)
        except (ConnectionFailed, Unavailable):
            if not self._seen_once:
                raise
            return None
        self._seen_once = True
        if self._on_status is not None:
            self._on_status(job)
        return job

    def poll(self) -> Job:
        delay = 0.1
        while True:
            job = self.look()
            if job is not None and job.finished:
                return job
            self.check_deadline()
            time.sleep(min(delay, self.next_look_in()))
            delay = min(delay * 2, 1.0)

    def next_look_in(self) -> float:
        if self._deadline is None:
            return STATUS_EVERY
        return max(0.01, min(STATUS_EVERY, self._deadline - time.monotonic()))

    def check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise WaitTimedOut(f"job {self._job_id} has not ended yet; it goes on running")


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def uploads_of(files: Files | None) -> list[Upload]:
    if not files:
        return []
    if isinstance(files, Mapping):
        return [Upload(source, dest) for dest, source in files.items()]
    return [Upload(source, dest) for source, dest in files]


def upload_counter(
    progress: Progress | None, uploads: Sequence[Upload]
) -> Callable[[int], None] | None:
    if progress is None:
        return None
    sizes = [u.size() for u in uploads]
    total = sum(s or 0 for s in sizes) if all(s is not None for s in sizes) else None
    sent = 0

    # Counts the body's bytes, framing included; reports them against the files' total.
    def count(n: int) -> None:
        nonlocal sent
        sent += n
        progress(min(sent, total) if total is not None else sent, total)

    return count


def _chunks(response: requests.Response, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_content(chunk_size=None)
    except requests.RequestException as exc:
        raise ConnectionFailed(f"the connection to Freight at {url} broke: {exc}") from exc


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    lines = LineSplitter()
    for chunk in chunks:
        yield from lines.feed(chunk)
    yield from lines.rest()


def _listing(response: requests.Response) -> dict[str, Any] | None:
    """A directory's listing when that is what came back; a file's bytes stay unread. A file
    comes as an attachment (a .json file too), a listing as plain JSON."""
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    if media_type != "application/json" or "Content-Disposition" in response.headers:
        return None
    body = response.json()
    return body if isinstance(body, dict) and "entries" in body else None


def _content_length(response: requests.Response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _copy(
    response: requests.Response,
    out: BinaryIO,
    total: int | None,
    progress: Progress | None,
    url: str,
) -> int:
    written = 0
    for chunk in _chunks_of(response, url):
        out.write(chunk)
        written += len(chunk)
        if progress is not None:
            progress(written, total)
    if total is not None and written != total:
        raise FreightError(f"the download was cut short: {written} of {total} bytes arrived")
    return written


def _chunks_of(response: requests.Response, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_content(chunk_size=DOWNLOAD_CHUNK)
    except requests.RequestException as exc:
        raise ConnectionFailed(f"the connection to Freight at {url} broke: {exc}") from exc


def _save_atomically(
    response: requests.Response,
    dest: Path,
    total: int | None,
    progress: Progress | None,
    url: str,
) -> int:
    """Written beside the destination, then renamed: an interrupted download leaves no
    half-file under the real name (and the file gets the user's usual permissions)."""
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(partial, "xb") as out:
            written = _copy(response, out, total, progress, url)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return written
