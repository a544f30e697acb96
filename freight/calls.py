"""The API's operations as data, shared by `Client` (requests) and `AsyncClient` (httpx): each
is a `Call`, the request to send and how to read its JSON answer, so both clients send the
same requests and read the same answers; only the sending differs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from freight.errors import FreightError, error_for_status
from freight.jobspec import PAIR_FIELDS, JobSpec
from freight.models import Event, Job, Submitted
from freight.retry import parse_retry_after

IDEMPOTENCY_HEADER = "Idempotency-Key"

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request, and `read`: its answer's JSON to the caller's result."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def idempotent(self) -> bool:
        """Safe to send again: anything but a POST, or a POST its Idempotency-Key guards."""
        return self.method != "POST" or IDEMPOTENCY_HEADER in self.headers


@dataclass(frozen=True)
class Cancellation:
    job_id: str
    message: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class JobsPage:
    jobs: list[Job]
    next: str | None  # the next page's path, None on the last


def get_job(job_id: str) -> Call[Job]:
    return Call("GET", f"/jobs/{segment(job_id)}", Job.from_json)


def jobs_page(
    status: str | Iterable[str] | None, page_size: int, id_prefix: str | None = None
) -> Call[JobsPage]:
    params: dict[str, Any] = {"limit": page_size}
    if status is not None:
        params["status"] = status if isinstance(status, str) else ",".join(status)
    if id_prefix:
        params["id_prefix"] = id_prefix
    return Call("GET", "/jobs", _jobs_page, params=params)


def next_jobs_page(path: str) -> Call[JobsPage]:
    return Call("GET", path, _jobs_page)


def _jobs_page(raw: Any) -> JobsPage:
    return JobsPage([Job.from_json(j) for j in raw["results"]], raw.get("next") or None)


def cancel_job(job_id: str) -> Call[Cancellation]:
    def read(raw: Any) -> Cancellation:
        return Cancellation(raw.get("id", job_id), raw.get("message", ""), raw)

    return Call("DELETE", f"/jobs/{segment(job_id)}", read)


def job_events(job_id: str) -> Call[list[Event]]:
    def read(raw: Any) -> list[Event]:
        return [Event.from_json(e) for e in raw["events"]]

    return Call("GET", f"/jobs/{segment(job_id)}/events", read)


def owner_usage(owner: str | None) -> Call[list[dict[str, Any]]]:
    def read(raw: Any) -> list[dict[str, Any]]:
        return list(raw["results"])

    return Call("GET", "/usage", read, params={"owner": owner} if owner else None)


def job_logs(job_id: str, stream: str | None, tail: int | None, follow: bool) -> Call[None]:
    """The logs' request; its answer is text, read as a stream by the client."""
    params: dict[str, Any] = {"stream": stream, "tail": tail}
    if follow:
        params["follow"] = "true"
    return Call(
        "GET",
        f"/jobs/{segment(job_id)}/logs",
        lambda _: None,
        params={k: v for k, v in params.items() if v is not None},
        headers={"Accept": "text/plain"},
    )


@dataclass(frozen=True)
class Submission:
    """A job's fields as `submit` was given them, sent as JSON or, with files, as a form."""

    fields: Mapping[str, Any]
    idempotency_key: str

    @classmethod
    def of(cls, arguments: Mapping[str, Any], idempotency_key: str | None) -> Submission:
        """`arguments`: `submit`'s own (its `locals()`), of which the JobSpec fields are sent,
        those given; so a field added to the model needs only a parameter, in either client."""
        request = {k: arguments[k] for k in JobSpec.model_fields if arguments.get(k) is not None}
        fields = {k: v for k, v in request.items() if k not in PAIR_FIELDS}
        pairs = {k: dict(request[k]) for k in PAIR_FIELDS if request.get(k)}
        return cls(fields | pairs, idempotency_key or str(uuid.uuid4()))

    @property
    def headers(self) -> dict[str, str]:
        return {IDEMPOTENCY_HEADER: self.idempotency_key}

    def json_call(self) -> Call[Submitted]:
        return Call("POST", "/jobs", Submitted.from_json, json=self.fields, headers=self.headers)

    def form(self) -> list[tuple[str, str]]:
        """A form sends a map as one KEY=VALUE field per entry."""
        form: list[tuple[str, str]] = []
        for name, value in self.fields.items():
            if name in PAIR_FIELDS:
                form += [(name, f"{key}={item}") for key, item in value.items()]
            else:
                form.append((name, str(value)))
        return form


def segment(job_id: str) -> str:
    return quote(job_id, safe="")


def api_error(
    status: int,
    reason: str,
    text: str,
    headers: Mapping[str, str],
    request: str,
) -> FreightError:
    """An error answer as the SDK's own error, the API's message kept."""
    error, message = None, ""
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            error, message = body.get("error"), str(body.get("message") or "")
    except ValueError:
        message = text[:300].strip()
    if not message:
        message = f"HTTP {status} {reason}"
    if status == 401:
        message += " (set FREIGHT_TOKEN, or `token = ...` in ~/.config/freight/config, mode 0600)"
    if status in (404, 405) and message.startswith(str(status)):
        # Falcon's bare "404 Not Found": not a missing job but a missing route, so a server
        # older than this client (a missing job or file is named in the message).
        message = f"{message}: this Freight server does not serve {request}; is it up to date?"
    return error_for_status(status, error, message, parse_retry_after(headers.get("Retry-After")))


def not_json(url: str, method: str, path: str, status: int) -> FreightError:
    return FreightError(
        f"Freight at {url} answered {method} {path} with something other than "
        f"JSON (HTTP {status}); is FREIGHT_URL the Freight API?"
    )


def unreachable(url: str) -> str:
    return (
        f"cannot reach Freight at {url}: is `make up` running? "
        "(set FREIGHT_URL to use another server)"
    )


class LineSplitter:
    """Output chunks to whole lines (without their newline), whatever the chunks' sizes."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._pending += chunk
        *complete, self._pending = self._pending.split(b"\n")
        return [line.decode(errors="replace") for line in complete]

    def rest(self) -> list[str]:
        return [self._pending.decode(errors="replace")] if self._pending else []
