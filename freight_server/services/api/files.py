"""Files: `GET /files?job_id=ID&path=/abs`, `GET /jobs/{id}/files?path=/abs`, and the original
document's `GET /files?path=/abs`.

A file answers with its bytes, streamed; a directory with its top-level entries. With a job, while
it runs they are read live from its container, through its runner; once it has ended, from what
its runner saved (its JobOutputsSaved, see freight_server/services/api/saved_files.py) and the
filestore's blobs. Without one, from the newest version saved by any of the caller's jobs
(`api_owner_files`, see freight_server/services/api/owner_files.py). Nothing here touches a
disk: every byte comes over RabbitMQ.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import time
from collections.abc import Callable, Iterator
from typing import Any

import falcon

from freight_server.services.api.auth import caller_of
from freight_server.services.api.errors import ApiError, bad_request, not_found
from freight_server.services.api.jobs import ApiDeps, find_job
from freight_server.services.api.owner_files import (
    DELETED,
    Version,
)
from freight_server.services.api.saved_files import NOTHING_SAVED
from freight_server.shared import filestore_protocol as protocol
from freight_server.shared.job_paths import InvalidPath, parent_of, requested_path
from freight_server.shared.jobs import JobView, Status
from freight_server.shared.rpc import IncomingStream, RemoteError, TransferError

log = logging.getLogger(__name__)

MAX_SYMLINK_HOPS = 8
# How long a read that finds the container just removed waits for the API to see the job end.
SETTLE_SECONDS = 10.0
# Names the job whose version of a path `GET /files` without `job_id` served.
JOB_HEADER = "X-Freight-Job-Id"


def entry_json(row: Any) -> dict[str, Any]:
    entry = protocol.FileEntry(
        row.name, row.path, row.type, row.size, row.mode, row.modified, row.target
    )
    return entry.to_dict()


# -- the route -----------------------------------------------------------------------------------


class JobFiles:
    """`/files` and `/jobs/{job_id}/files`."""

    def __init__(self, deps: ApiDeps):
        self._deps = deps

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str | None = None) -> None:
        job_id = job_id or req.get_param("job_id")
        try:
            path = requested_path(req.get_param("path"))
        except InvalidPath as exc:
            raise bad_request(f"path {exc}") from None
        if not job_id:
            self._serve_owners(_owner_asked(req), path, resp)
            return
        view = find_job(self._deps, job_id, caller_of(req))
        if view.status == Status.RUNNING:
            if self._serve_live(view, path, resp):
                return
            view = self._settled(view)
        if not view.status.is_terminal:
            raise ApiError(
                falcon.HTTP_409,
                "conflict",
                f"job {job_id} is {view.status.value}: its files can be read once it runs",
            )
        self._serve_saved(view, path, resp)

    def _serve_live(self, view: JobView, path: str, resp: falcon.Response) -> bool:
        """Read from the running container; False if it has just gone (read what was saved)."""
        runner_files = self._deps.runner_files
        assert runner_files is not None and view.runner is not None
        try:
            stream = runner_files.read(view.runner, view.job_id, view.attempt, path)
        except RemoteError as exc:
            if exc.code == protocol.GONE:
                return False
            if exc.code == protocol.NOT_FOUND:
                raise not_found(f"job {view.job_id} has no {path}") from None
            raise _unavailable(f"runner {view.runner} could not read {path}: {exc}") from None
        except TransferError as exc:
            raise _unavailable(f"runner {view.runner} did not answer: {exc}") from None
        head = stream.head
        if head.get("type") == "dir":
            stream.close()
            resp.media = {"path": path, "entries": head.get("entries") or []}
        else:
            _send_file(resp, path, int(head["size"]), stream)
        return True

    def _settled(self, view: JobView) -> JobView:
        """The container is gone, so the job has ended: wait for this API to read its end."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            current = self._deps.jobs.get(view.job_id)
            if current is not None and current.status.is_terminal:
                return current
            time.sleep(0.1)
        raise _unavailable(f"job {view.job_id} is ending; try again in a moment")

    def _serve_saved(self, view: JobView, path: str, resp: falcon.Response) -> None:
        assert self._deps.outputs is not None
        job_id = view.job_id
        manifest = self._deps.outputs.manifest(job_id, view.attempt) or NOTHING_SAVED
        entry = _followed(manifest.entry(path), manifest.entry)
        if entry is not None and entry.skipped:
            raise not_found(f"job {job_id} did not save {path}: {entry.skipped}")
        if entry is not None and entry.type == "file":
            self._send_blob(resp, path, entry)
            return
        children = manifest.children(entry.path if entry else path)
        if entry is None and not children:
            saved = len(manifest) > 0
            raise not_found(
                f"job {job_id} has no {path}" + ("" if saved else " (it saved no files)")
            )
        resp.media = {"path": path, "entries": [entry_json(c) for c in children]}

    def _serve_owners(self, owner: str, path: str, resp: falcon.Response) -> None:
        """The owner's newest saved version of the path, whichever job saved it."""
        assert self._deps.outputs is not None
        files = self._deps.outputs.by_owner
        version = _followed(files.version(owner, path), lambda p: files.version(owner, p))
        if version is not None and version.type == DELETED:
            raise not_found(f"{path} was deleted by job {version.job_id}")
        if version is not None and version.skipped:
            raise not_found(f"job {version.job_id} did not save {path}: {version.skipped}")
        if version is not None and version.type == "file":
            resp.set_header(JOB_HEADER, version.job_id)
            self._send_blob(resp, path, version)
            return
        listing = files.children(owner, version.path if version else path)
        if version is None and not listing.entries:
            raise not_found(f"none of {owner}'s jobs has {path}")
        resp.media = {"path": path, "entries": [_owned_entry_json(v) for v in listing.entries]}
        if listing.truncated:
            resp.media["truncated"] = True

    def _send_blob(self, resp: falcon.Response, path: str, entry: Any) -> None:
        filestore = self._deps.filestore
        assert filestore is not None
        try:
            stream = filestore.download(entry.digest)
        except RemoteError as exc:
            if exc.code == protocol.NOT_FOUND:
                raise ApiError(
                    falcon.HTTP_410,
                    "gone",
                    f"{path} was deleted: a job's files are kept for FREIGHT_FILE_RETENTION "
                    "after it ends",
                ) from None
            raise _unavailable(f"the filestore could not read {path}: {exc}") from None
        except TransferError as exc:
            raise _unavailable(f"the filestore did not answer: {exc}") from None
        _send_file(resp, path, int(stream.head["size"]), stream)


def _owner_asked(req: falcon.Request) -> str:
    """Whose files: the caller's own; an admin may name another owner with `?owner=`."""
    caller = caller_of(req)
    owner = req.get_param("owner") or caller.name
    if owner != caller.name and not caller.is_admin:
        raise ApiError(falcon.HTTP_403, "forbidden", "only an admin may read another owner's files")
    return owner


def _followed(entry: Any, lookup: Callable[[str], Any]) -> Any:
    """The entry, or what the symlink it is leads to (up to MAX_SYMLINK_HOPS links)."""
    for _ in range(MAX_SYMLINK_HOPS):
        if entry is None or entry.type != "symlink" or not entry.target:
            break
        entry = lookup(posixpath.normpath(posixpath.join(parent_of(entry.path), entry.target)))
    return entry


def _owned_entry_json(version: Version) -> dict[str, Any]:
    return {**entry_json(version), "job_id": version.job_id}


def _send_file(resp: falcon.Response, path: str, size: int, stream: IncomingStream) -> None:
    name = posixpath.basename(path) or "file"
    resp.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    resp.content_length = size
    resp.downloadable_as = name
    resp.stream = _relay(stream, path)


def _relay(stream: IncomingStream, path: str) -> Iterator[bytes]:
    """The bytes as they arrive; closing early (the client left) cancels the transfer."""
    try:
        yield from stream
    except TransferError as exc:
        # Headers are out: all that is left is to cut the response short, which the client
        # sees as a body shorter than its Content-Length.
        log.warning("download of %s failed midway: %s", path, exc)
        raise
    finally:
        stream.close()


def _unavailable(message: str) -> ApiError:
    return ApiError(falcon.HTTP_503, "unavailable", message, headers={"Retry-After": "2"})
