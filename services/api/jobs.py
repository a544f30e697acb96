"""The job routes: submit, list, show, cancel, and a job's event history."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import falcon

from services.api.errors import ApiError, bad_request, not_found
from services.api.forms import read_fields
from services.api.store import JobStore, RecentSubmissions
from services.api.submission import parse_job_request
from shared.config import Settings
from shared.events import Event, EventFactory, EventType
from shared.jobs import UNFINISHED, JobView, Status, evolve

MAX_PAGE = 1000


class EventLog(Protocol):
    def append(self, *events: Event) -> None: ...


@dataclass
class ApiDeps:
    settings: Settings
    log: EventLog
    jobs: JobStore
    recent: RecentSubmissions
    new_event: EventFactory
    new_job_id: Callable[[], str]


def present(view: JobView) -> dict[str, Any]:
    """A job as users see it: the document's `job_id` and `status`, and the rest of its life."""
    raw = view.to_dict()
    return {
        "job_id": view.job_id,
        "status": view.status.value,
        "command": view.command,
        "image": view.image,
        "gpus": view.gpus,
        "env": raw["env"],
        "timeout": view.timeout,
        "max_attempts": view.max_attempts,
        "created_at": raw["created_at"],
        "started_at": raw["started_at"],
        "finished_at": raw["finished_at"],
        "exit_code": view.exit_code,
        "reason": view.reason,
        "runner": view.runner,
        "attempt": view.attempt,
        "assigned_gpus": raw["assigned_gpus"],
    }


class Jobs:
    """`/jobs` and the document's `/submission`."""

    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self._deps
        fields = read_fields(req, deps.settings.max_request_bytes)
        request = parse_job_request(fields, deps.settings.default_image)
        job_id = deps.new_job_id()
        submitted = deps.new_event(EventType.JOB_SUBMITTED, job_id, **request.event_data())
        deps.log.append(submitted)
        view = evolve(None, submitted)
        assert view is not None
        deps.recent.add(view)
        body: dict[str, Any] = {
            "job_id": job_id,
            "command": request.command,
            "status": view.status.value,
        }
        if request.gpus is not None:
            body["gpus"] = request.gpus
        resp.status = falcon.HTTP_201
        resp.location = f"/jobs/{job_id}"
        resp.media = body

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        requested = req.get_param_as_list("status", delimiter=",") or []
        statuses = _statuses(requested)
        limit = _int_param(req, "limit", default=100, minimum=1, maximum=MAX_PAGE)
        cursor = _int_param(req, "cursor", default=None, minimum=0)
        page = self._deps.jobs.page(statuses, limit, cursor)
        next_url = None
        if page.next_cursor is not None:
            status = ",".join(requested)
            next_url = f"/jobs?limit={limit}&cursor={page.next_cursor}"
            next_url += f"&status={status}" if status else ""
        resp.media = {
            "count": page.total,
            "results": [present(v) for v in page.jobs],
            "next": next_url,
        }


class Job:
    """`/jobs/{job_id}`."""

    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        resp.media = present(find_job(self._deps, job_id))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        deps = self._deps
        view = find_job(deps, job_id)
        if view.status.is_terminal:
            raise ApiError(
                falcon.HTTP_409,
                "conflict",
                f"job {job_id} already ended ({view.status.value}); there is nothing to cancel",
            )
        deps.log.append(deps.new_event(EventType.JOB_CANCEL_REQUESTED, job_id))
        resp.status = falcon.HTTP_202
        message = (
            f"job {job_id} is shutting down"
            if view.status == Status.RUNNING
            else f"job {job_id} is cancelled"
        )
        resp.media = {"id": job_id, "message": message}


class JobEvents:
    """`/jobs/{job_id}/events`: the job's history as the log recorded it."""

    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        find_job(self._deps, job_id)
        events = self._deps.jobs.events(job_id)
        resp.media = {"job_id": job_id, "count": len(events), "events": events}


def find_job(deps: ApiDeps, job_id: str) -> JobView:
    view = deps.jobs.get(job_id) or deps.recent.get(job_id)
    if view is None:
        raise not_found(f"no job with id {job_id!r}")
    return view


def _statuses(values: list[str]) -> list[Status] | None:
    if not values:
        return list(UNFINISHED)
    if any(v.lower() == "all" for v in values):
        return None
    try:
        return [Status(v.upper()) for v in values]
    except ValueError:
        raise bad_request(
            f"status must be 'all' or among {[s.value for s in Status]}, got {values}"
        ) from None


def _int_param(
    req: falcon.Request, name: str, default: int | None, minimum: int, maximum: int | None = None
) -> Any:
    raw = req.get_param(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise bad_request(f"{name} must be between {minimum} and {maximum or 'any'}")
    return value
