"""GA4GH TES v1.1 at `/ga4gh/tes/v1` (docs/tes.md): service-info, create, list, get, cancel.

The edges of freight_server/services/api/tes_model.py: a created task is appended as a
JobSubmitted like any job (its inputs uploaded through the same InputUploads as `file[]`
parts), read back from the API's projection, cancelled with a JobCancelRequested. Its `file://`
inputs are read and its `file://` outputs written on this host, only under
FREIGHT_TES_ALLOWED_DIRS.
"""

from __future__ import annotations

import importlib.metadata
import io
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import falcon
from pydantic import ValidationError

from freight_server.services.api.auth import caller_of
from freight_server.services.api.errors import ApiError, bad_request
from freight_server.services.api.jobs import MAX_PAGE, ApiDeps, find_job
from freight_server.services.api.saved_files import Manifest, SavedEntry
from freight_server.services.api.submission import parse_job_request
from freight_server.services.api.tes_model import (
    BACKEND_PARAMETERS,
    TES_VERSION,
    InvalidTask,
    Organization,
    Output,
    OutputFileLog,
    ServiceInfo,
    ServiceType,
    Task,
    TaskRecord,
    View,
    check_task,
    job_fields,
    matches,
    present_task,
    record_of,
    unsupported_parameters,
)
from freight_server.services.api.uploads import InputUploads
from freight_server.shared.events import EventType
from freight_server.shared.filestore_protocol import STREAMS, log_records
from freight_server.shared.jobs import JobView, Status, fold
from freight_server.shared.rpc import RemoteError, TransferError

log = logging.getLogger(__name__)

PREFIX = "/ga4gh/tes/v1"
CANCEL = ":cancel"
DEFAULT_PAGE = 256
TAIL_LINES = 200  # of each stream, in an executor log
TAIL_BYTES = 64 * 1024
SCAN_LIMIT = 10  # a filtered page reads at most this many pages' worth of jobs


def install(app: falcon.App, deps: ApiDeps) -> None:
    tasks = Tasks(deps)
    app.add_route(f"{PREFIX}/service-info", ServiceInfoRoute(deps))
    app.add_route(f"{PREFIX}/tasks", tasks)
    # `/tasks/{id}:cancel` shares the segment with `/tasks/{id}`: one route answers both.
    app.add_route(f"{PREFIX}/tasks/{{task_ref}}", TaskRoute(deps, tasks))


class ServiceInfoRoute:
    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        settings = self._deps.settings
        info = ServiceInfo(
            id=f"org.freight.{settings.namespace}",
            name="Freight",
            type=ServiceType(group="org.ga4gh", artifact="tes", version=TES_VERSION),
            description="GA4GH TES on Freight's GPU jobs (docs/tes.md)",
            organization=Organization(name="Freight", url="https://github.com/freight"),
            version=importlib.metadata.version("freight"),
            storage=[d.resolve().as_uri() for d in settings.tes_allowed_dirs],
            backend_parameters=list(BACKEND_PARAMETERS),
        )
        resp.media = info.to_json()


class Tasks:
    def __init__(self, deps: ApiDeps):
        self._deps = deps
        self._outputs = OutputDelivery(deps)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        deps = self._deps
        caller = caller_of(req)
        task = _task_in(req.get_media())
        system_error = self._system_error(task)
        settings = deps.settings
        request = parse_job_request(
            job_fields(task), settings.default_image, settings.allowed_images
        )
        inputs = InputUploads(deps.filestore, settings)
        try:
            if system_error is None:  # a task that will not run needs none of its inputs
                self._upload_inputs(task, inputs)
        except BaseException:
            inputs.discard()
            raise
        record = TaskRecord(task=task, system_error=system_error)
        job_id = deps.new_job_id()
        data = {
            **request.event_data(),
            **inputs.event_data(),
            "owner": caller.name,
            "tes": record.model_dump(mode="json", exclude_none=True),
        }
        events = [deps.new_event(EventType.JOB_SUBMITTED, job_id, **data)]
        if system_error is not None:
            # In the log, and ended at once: Freight never runs it, and its state says why.
            events.append(deps.new_event(EventType.JOB_CANCEL_REQUESTED, job_id))
        deps.log.append(*events)
        log.info("accepted TES task %s from %s", job_id, caller.name)
        view = fold(events)
        assert view is not None
        deps.recent.add(view)
        resp.media = {"id": job_id}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = caller_of(req)
        shown = _view(req)
        size = _page_size(req.get_param("page_size"))
        before = _page_token(req.get_param("page_token"))
        state = req.get_param("state") or None
        keys = req.get_param_as_list("tag_key") or []
        values = req.get_param_as_list("tag_value") or []
        if len(values) > len(keys):
            raise bad_request("each tag_value needs its tag_key")
        tags = {key: values[i] if i < len(values) else "" for i, key in enumerate(keys)}
        name_prefix = req.get_param("name_prefix") or None
        filtered = bool(state or tags or name_prefix)

        def wanted(view: JobView) -> bool:
            return not filtered or matches(present_task(view, View.BASIC), name_prefix, state, tags)

        # A filtered page reads on past the jobs it skips, up to SCAN_LIMIT pages' worth.
        scan = size * SCAN_LIMIT if filtered else size
        owner = None if caller.is_admin else caller.name
        rows = self._deps.jobs.newest(owner, before, scan + 1)
        views, token = page_of(rows, size, scan, wanted)
        answer: dict[str, Any] = {"tasks": [self._present(v, shown, deliver=False) for v in views]}
        if token is not None:
            answer["next_page_token"] = str(token)
        resp.media = answer

    def present(self, view: JobView, shown: View) -> dict[str, Any]:
        return self._present(view, shown, deliver=True)

    def _present(self, view: JobView, shown: View, deliver: bool) -> dict[str, Any]:
        if shown == View.MINIMAL:
            return present_task(view, shown)
        delivered = self._outputs.deliver(view) if deliver else []
        output = _printed(self._deps, view) if shown == View.FULL else None
        return present_task(view, shown, output, delivered)

    def _system_error(self, task: Task) -> str | None:
        """Why Freight will not run a task it accepts; None if it will. A `file://` url outside
        the allowed directories is refused outright (400) instead."""
        allowed = self._deps.settings.tes_allowed_dirs
        for kind, number, url in _urls(task):
            scheme = urlparse(url).scheme
            if scheme == "file":
                _allowed_path(url, allowed, f"{kind}[{number}].url")
                continue
            return (
                f"{kind}[{number}].url: {scheme or 'a url without a scheme'}"
                f"{'://' if scheme else ''} is not supported here; Freight reads and writes "
                "only file:// urls under its allowed directories (service-info's `storage`), "
                "and takes inputs inline as `content`"
            )
        unknown = unsupported_parameters(task.resources)
        if unknown and task.resources is not None and task.resources.backend_parameters_strict:
            return (
                f"backend_parameters {', '.join(unknown)} are not supported (strict); "
                f"Freight supports {', '.join(BACKEND_PARAMETERS)}"
            )
        return None

    def _upload_inputs(self, task: Task, inputs: InputUploads) -> None:
        allowed = self._deps.settings.tes_allowed_dirs
        for number, given in enumerate(task.inputs or ()):
            if given.content is not None:
                inputs.receive(given.path, io.BytesIO(given.content.encode()))
                continue
            assert given.url is not None
            source = _allowed_path(given.url, allowed, f"inputs[{number}].url")
            for path, destination in _files_of(source, given.path, given.type, number):
                with path.open("rb") as stream:
                    inputs.receive(destination, stream)


class TaskRoute:
    """`/tasks/{id}` and `/tasks/{id}:cancel`."""

    def __init__(self, deps: ApiDeps, tasks: Tasks):
        self._deps = deps
        self._tasks = tasks

    def on_get(self, req: falcon.Request, resp: falcon.Response, task_ref: str) -> None:
        if task_ref.endswith(CANCEL):
            raise falcon.HTTPMethodNotAllowed(["POST"])
        view = find_job(self._deps, task_ref, caller_of(req))
        resp.media = self._tasks.present(view, _view(req))

    def on_post(self, req: falcon.Request, resp: falcon.Response, task_ref: str) -> None:
        if not task_ref.endswith(CANCEL):
            raise falcon.HTTPMethodNotAllowed(["GET"])
        job_id = task_ref.removesuffix(CANCEL)
        view = find_job(self._deps, job_id, caller_of(req))
        # A task that ended is left as it ended: TES answers the cancel all the same.
        if not view.status.is_terminal and not view.cancel_requested:
            self._deps.log.append(self._deps.new_event(EventType.JOB_CANCEL_REQUESTED, job_id))
            log.info("cancel requested for TES task %s (%s)", job_id, view.status.value)
        resp.media = {}


# -- outputs ---------------------------------------------------------------------------------------


class OutputDelivery:
    """A COMPLETE task's `file://` outputs, written from what its job saved when the task is
    first read after it ends (a GET or a listing with BASIC or FULL). A file already there with
    the saved size is taken as delivered, so reading a task again writes nothing again."""

    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def deliver(self, view: JobView) -> list[OutputFileLog]:
        record = record_of(view)
        wanted = [o for o in record.task.outputs or () if urlparse(o.url).scheme == "file"]
        if view.status != Status.COMPLETE or not wanted or record.system_error is not None:
            return []
        delivered: list[OutputFileLog] = []
        for number, output in enumerate(wanted):
            try:
                delivered += self._deliver_one(view, output, number)
            except (OSError, RemoteError, TransferError) as exc:
                log.warning("task %s: output %s not delivered: %s", view.job_id, output.url, exc)
        return delivered

    def _deliver_one(self, view: JobView, output: Output, number: int) -> list[OutputFileLog]:
        outputs, allowed = self._deps.outputs, self._deps.settings.tes_allowed_dirs
        assert outputs is not None
        target = _allowed_path(output.url, allowed, f"outputs[{number}].url")
        delivered = []
        manifest = outputs.manifest(view.job_id, view.attempt)
        for entry in _saved(manifest, output.path) if manifest is not None else ():
            relative = posixpath.relpath(entry.path, output.path)
            destination = target if relative == "." else target / relative
            self._write(entry, destination)
            url = output.url if relative == "." else f"{output.url.rstrip('/')}/{relative}"
            delivered.append(OutputFileLog(url=url, path=entry.path, size_bytes=str(entry.size)))
        return delivered

    def _write(self, entry: Any, destination: Path) -> None:
        if destination.is_file() and destination.stat().st_size == entry.size:
            return
        filestore = self._deps.filestore
        assert filestore is not None
        destination.parent.mkdir(parents=True, exist_ok=True)
        stream = filestore.download(entry.digest)
        handle, partial = tempfile.mkstemp(dir=destination.parent, prefix=".freight-")
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in stream:
                    out.write(chunk)
            os.replace(partial, destination)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        finally:
            stream.close()


# -- reads -----------------------------------------------------------------------------------------


def page_of(
    rows: Sequence[tuple[int, JobView]], size: int, scan: int, wanted: Callable[[JobView], bool]
) -> tuple[list[JobView], int | None]:
    """Up to `size` of `rows` (newest first, `scan + 1` of them at most) that are `wanted`, read
    from at most `scan` rows; and the page token to go on with (the position of the last row
    read) if rows remain after it."""
    kept: list[JobView] = []
    for index, (position, view) in enumerate(rows):
        if wanted(view):
            kept.append(view)
        if len(kept) == size or index + 1 == scan:
            return kept, position if index + 1 < len(rows) else None
    return kept, None


def _printed(deps: ApiDeps, view: JobView) -> tuple[str, str] | None:
    """The tail of what the task's current attempt printed: (stdout, stderr)."""
    filestore = deps.filestore
    if filestore is None or view.attempt == 0:
        return None
    tails = []
    try:
        for stream in STREAMS.values():
            offset, skip = filestore.tail_log(view.job_id, view.attempt, TAIL_LINES, [stream])
            text = bytearray()
            while len(text) < TAIL_BYTES:
                chunk = filestore.read_log(view.job_id, view.attempt, offset, [stream])
                for _, body in log_records(chunk.records):
                    text += body[skip:]
                    skip = 0
                if chunk.next == offset:
                    break
                offset = chunk.next
            tails.append(bytes(text[-TAIL_BYTES:]).decode("utf-8", "replace"))
    except (RemoteError, TransferError) as exc:
        log.warning("task %s: its output could not be read: %s", view.job_id, exc)
        return None
    return tails[0], tails[1]


# -- requests --------------------------------------------------------------------------------------


def _task_in(body: Any) -> Task:
    if not isinstance(body, dict):
        raise bad_request("a task is a JSON object (tesTask)")
    try:
        task = Task.model_validate(body)
        check_task(task)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "task"
        raise bad_request(f"{where}: {error['msg']}") from None
    except InvalidTask as exc:
        raise bad_request(str(exc)) from None
    # What a client may send but only Freight sets.
    return task.model_copy(update={"id": None, "state": None, "logs": None, "creation_time": None})


def _urls(task: Task) -> Iterator[tuple[str, int, str]]:
    for number, given in enumerate(task.inputs or ()):
        if given.url is not None:
            yield "inputs", number, given.url
    for number, wanted in enumerate(task.outputs or ()):
        yield "outputs", number, wanted.url


def _allowed_path(url: str, allowed: tuple[Path, ...], field: str) -> Path:
    """The host path of a `file://` url, if inside an allowed directory (links resolved)."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise bad_request(f"{field}: a file:// url names this host only, not {parsed.netloc!r}")
    try:
        path = Path(unquote(parsed.path)).resolve()
    except (OSError, ValueError) as exc:  # a NUL byte, a loop of links
        raise bad_request(f"{field}: not a usable path: {exc}") from None
    if not any(path.is_relative_to(d.resolve()) for d in allowed):
        where = ", ".join(str(d) for d in allowed) or "none: FREIGHT_TES_ALLOWED_DIRS is unset"
        raise bad_request(f"{field}: {path} is outside the allowed directories ({where})")
    return path


def _files_of(source: Path, path: str, kind: str, number: int) -> Iterator[tuple[Path, str]]:
    """(host file, its path in the job) for a FILE input, or each file of a DIRECTORY one."""
    if kind == "FILE":
        if not source.is_file():
            raise bad_request(f"inputs[{number}].url: {source} is not a file")
        yield source, path
        return
    if not source.is_dir():
        raise bad_request(f"inputs[{number}].url: {source} is not a directory")
    for folder, _, names in os.walk(source):
        for name in sorted(names):
            host = Path(folder) / name
            yield host, posixpath.join(path, host.relative_to(source).as_posix())


def _view(req: falcon.Request) -> View:
    raw = (req.get_param("view") or View.MINIMAL.value).upper()
    try:
        return View(raw)
    except ValueError:
        raise bad_request(f"view must be MINIMAL, BASIC or FULL, got {raw!r}") from None


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE
    try:
        size = int(raw)
    except ValueError:
        raise bad_request(f"page_size must be a number, got {raw!r}") from None
    if not 1 <= size <= MAX_PAGE:
        raise bad_request(f"page_size must be between 1 and {MAX_PAGE}")
    return size


def _page_token(raw: str | None) -> int | None:
    """The opaque token is the job listing's cursor: the log position to read on before."""
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise ApiError(falcon.HTTP_400, "invalid_request", "page_token is not one this API gave")
    return int(raw)


def _saved(manifest: Manifest, path: str) -> Iterator[SavedEntry]:
    """The saved files at `path`: itself, or every file under it."""
    entry = manifest.entry(path)
    if entry is not None and entry.skipped is None and entry.type == "file":
        yield entry
        return
    for child in manifest.children(path):
        if child.type == "file":
            yield child
        elif child.type == "dir":
            yield from _saved(manifest, child.path)
