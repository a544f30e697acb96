"""The job routes: submit, list, show, cancel, and a job's event history."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import falcon

from freight.jobspec import Submitted
from freight_server.services.api.auth import Caller, caller_of
from freight_server.services.api.errors import ApiError, bad_request, not_found
from freight_server.services.api.forms import read_fields
from freight_server.services.api.health import Monitor
from freight_server.services.api.idempotency import HEADER as IDEMPOTENCY_HEADER
from freight_server.services.api.idempotency import (
    REPLAYED_HEADER,
    KeyedJob,
    changed_field,
    idempotency_key,
    job_for_key,
)
from freight_server.services.api.runners import RunnerStore
from freight_server.services.api.store import JobStore, RecentSubmissions
from freight_server.services.api.submission import InvalidRequest, JobRequest, parse_job_request
from freight_server.services.api.uploads import InputUploads
from freight_server.shared.bus import BrokerUnavailable, ConfirmMissing
from freight_server.shared.config import Settings
from freight_server.shared.events import Event, EventFactory, EventType
from freight_server.shared.filestore_client import FilestoreClient, RunnerFilesClient
from freight_server.shared.jobs import UNFINISHED, JobView, Status, evolve
from freight_server.shared.secret_env import SecretBox, masked

if TYPE_CHECKING:
    from freight_server.services.api.saved_files import OutputStore

MAX_PAGE = 1000
MAX_CURSOR = 2**63 - 1  # a log position is a signed 64-bit integer in every database
ID_PREFIX = re.compile(r"[0-9a-fA-F-]{1,36}")

log = logging.getLogger(__name__)


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
    monitor: Monitor | None = None  # /readyz and /metrics; absent in tests that need neither
    # Files (freight_server/services/api/files.py); absent in tests that send none.
    filestore: FilestoreClient | None = None
    runner_files: RunnerFilesClient | None = None
    outputs: OutputStore | None = None
    runners: RunnerStore | None = None  # GET /runners; absent in tests that need none


def present(view: JobView) -> dict[str, Any]:
    """A job as users see it: the document's `job_id` and `status`, and the rest of its life.
    Its fields are freight.jobspec.Job's (tests/unit/test_job_model.py holds them together);
    built by hand rather than through the model, since a page may list a thousand."""
    raw = view.to_dict()
    return {
        "job_id": view.job_id,
        "status": view.status.value,
        "owner": view.owner,
        "name": view.name,
        "labels": raw["labels"],
        "command": view.command,
        "image": view.image,
        "gpus": view.gpus,
        "gpu_memory": view.gpu_memory,
        "cpus": view.cpus,
        "memory": view.memory,
        "env": raw["env"],
        "secret_env": masked(view.secret_env),
        "timeout": view.timeout,
        "max_attempts": view.max_attempts,
        "priority": view.priority,
        "created_at": raw["created_at"],
        "started_at": raw["started_at"],
        "finished_at": raw["finished_at"],
        "exit_code": view.exit_code,
        "reason": view.reason,
        "runner": view.runner,
        "attempt": view.attempt,
        "assigned_gpus": [
            {"index": g.get("index"), "uuid": g.get("uuid"), "name": g.get("name")}
            for g in view.assigned_gpus
        ],
    }


class Jobs:
    """`/jobs` and the document's `/submission`."""

    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self._deps
        caller = caller_of(req)
        inputs = InputUploads(deps.filestore, deps.settings)
        try:
            key = idempotency_key(req.get_header(IDEMPOTENCY_HEADER))
            fields = read_fields(req, deps.settings.max_request_bytes, on_file=inputs.receive)
            settings = deps.settings
            request = parse_job_request(fields, settings.default_image, settings.allowed_images)
            secrets = _sealed_secret_env(request, settings)
            keyed = self._job_for_key(caller, key, request, inputs.files)
        except BaseException:
            inputs.discard()  # not after a failed append: the job may be in the log even so
            raise
        if keyed is not None and keyed.first is not None:
            inputs.discard()  # the first request's job keeps the files it came with
            log.info("job %s submitted again with its Idempotency-Key", keyed.job_id)
            _answer_submitted(resp, keyed.first, replayed=True)
            return
        job_id = keyed.job_id if keyed is not None else deps.new_job_id()
        data = {**request.event_data(), **inputs.event_data(), "owner": caller.name, **secrets}
        if key is not None:
            data["idempotency_key"] = key
        submitted = deps.new_event(EventType.JOB_SUBMITTED, job_id, **data)
        _append_submission(deps.log, submitted, keyed=key is not None)
        log.info("accepted job %s from %s (image %s)", job_id, caller.name, request.image)
        view = evolve(None, submitted)
        assert view is not None
        deps.recent.add(view)
        _answer_submitted(resp, view, replayed=False)

    def _job_for_key(
        self,
        caller: Caller,
        key: str | None,
        request: JobRequest,
        files: Sequence[Mapping[str, Any]],
    ) -> KeyedJob | None:
        """The job the key names; a job it already made must be the one asked for again."""
        if key is None:
            return None
        deps = self._deps
        keyed = job_for_key(
            caller.name,
            key,
            lambda job_id: deps.jobs.get(job_id) or deps.recent.get(job_id),
            deps.new_event.clock(),
        )
        if keyed.first is not None and (changed := changed_field(keyed.first, request, files)):
            raise ApiError(
                falcon.HTTP_422,
                "idempotency_key_reused",
                f"{IDEMPOTENCY_HEADER} {key!r} was already used for job {keyed.job_id}, which "
                f"has another {changed}; send a new key for a new job",
                details={"job_id": keyed.job_id},
            )
        return keyed

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        requested = req.get_param_as_list("status", delimiter=",") or []
        statuses = _statuses(requested)
        limit = _int_param(req, "limit", default=100, minimum=1, maximum=MAX_PAGE)
        cursor = _int_param(req, "cursor", default=None, minimum=0, maximum=MAX_CURSOR)
        id_prefix = _id_prefix(req)
        owner = _owner_listed(req, caller_of(req))
        page = self._deps.jobs.page(statuses, limit, cursor, owner=owner, id_prefix=id_prefix)
        next_url = None
        if page.next_cursor is not None:
            query: dict[str, Any] = {"limit": limit, "cursor": page.next_cursor}
            if requested:
                query["status"] = ",".join(requested)
            if req.get_param("owner"):
                query["owner"] = owner
            if id_prefix:
                query["id_prefix"] = id_prefix
            next_url = f"/jobs?{urlencode(query)}"
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
        resp.media = present(find_job(self._deps, job_id, caller_of(req)))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        deps = self._deps
        view = find_job(deps, job_id, caller_of(req))
        if view.status.is_terminal:
            raise ApiError(
                falcon.HTTP_409,
                "conflict",
                f"job {job_id} already ended ({view.status.value}); there is nothing to cancel",
            )
        deps.log.append(deps.new_event(EventType.JOB_CANCEL_REQUESTED, job_id))
        log.info("cancel requested for job %s (%s)", job_id, view.status.value)
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
        find_job(self._deps, job_id, caller_of(req))
        events = [_without_secrets(e) for e in self._deps.jobs.events(job_id)]
        resp.media = {"job_id": job_id, "count": len(events), "events": events}


def _append_submission(log: EventLog, submitted: Event, keyed: bool) -> None:
    """A publish that was not confirmed may still have landed: the 503 says so, with the job's
    id, so that the client can look before it submits again."""
    try:
        log.append(submitted)
    except BrokerUnavailable as exc:
        job_id = submitted.job_id
        if keyed:
            advice = f"retry with the same {IDEMPOTENCY_HEADER}: it cannot make a second job"
        elif isinstance(exc, ConfirmMissing):
            advice = (
                f"the job may still have been accepted as {job_id}: look at /jobs/{job_id} "
                f"before submitting again, or send an {IDEMPOTENCY_HEADER} to make retries safe"
            )
        else:
            raise  # nothing went out: the usual 503 (errors.py)
        raise ApiError(
            falcon.HTTP_503,
            "unavailable",
            f"{exc}; {advice}",
            headers={"Retry-After": "2"},
            details={"job_id": job_id},
        ) from None


def _answer_submitted(resp: falcon.Response, view: JobView, replayed: bool) -> None:
    """201 with the job as it was accepted, which a replay answers again word for word (what
    became of the job since: GET /jobs/{id})."""
    submitted = Submitted(
        job_id=view.job_id, command=view.command, status=Status.QUEUED, gpus=view.gpus
    )
    resp.status = falcon.HTTP_201
    resp.location = f"/jobs/{view.job_id}"
    resp.media = submitted.model_dump(mode="json", exclude_none=True)
    if replayed:
        resp.set_header(REPLAYED_HEADER, "true")


def find_job(deps: ApiDeps, job_id: str, caller: Caller) -> JobView:
    """The job, if the caller may see it. Another user's job is answered exactly as a missing
    one, so that nobody learns which ids exist."""
    view = deps.jobs.get(job_id) or deps.recent.get(job_id)
    if view is None or not caller.may_see(view.owner):
        raise not_found(f"no job with id {job_id!r}")
    return view


def _sealed_secret_env(request: JobRequest, settings: Settings) -> dict[str, Any]:
    """JobSubmitted's `secret_env`: the values sealed, so the log never holds them in clear."""
    if not request.secret_env:
        return {}
    box = SecretBox.from_settings(settings)
    if box is None:
        raise InvalidRequest(
            "secret_env",
            "this Freight has no FREIGHT_SECRET_KEY, so it cannot keep secrets; its operator "
            "can set one (docs/security.md)",
        )
    return {"secret_env": box.seal(request.secret_env)}


def _without_secrets(event: dict[str, Any]) -> dict[str, Any]:
    """An event as users see it: sealed values are shown by name only."""
    data = event.get("data")
    if not isinstance(data, dict) or not data.get("secret_env"):
        return event
    return {**event, "data": {**data, "secret_env": masked(data["secret_env"])}}


def _owner_listed(req: falcon.Request, caller: Caller) -> str | None:
    """Whose jobs to list: a user's own only; an admin's every owner's, or `?owner=`'s."""
    asked = req.get_param("owner") or None
    if caller.is_admin:
        return asked
    if asked is not None and asked != caller.name:
        raise ApiError(falcon.HTTP_403, "forbidden", "only an admin may list another owner's jobs")
    return caller.name


def _id_prefix(req: falcon.Request) -> str | None:
    """The start of the ids to list (`freight logs 0d6c`): hexadecimal digits and dashes."""
    raw = req.get_param("id_prefix")
    if not raw:
        return None
    if not ID_PREFIX.fullmatch(raw):
        raise bad_request(
            f"id_prefix must be the start of a job id (1 to 36 hexadecimal digits and dashes), "
            f"got {raw[:40]!r}"
        )
    return raw.lower()


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
