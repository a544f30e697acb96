"""A submission's files: each `file[]` part goes to the filestore as the form is read, in chunks,
so memory stays bounded whatever the size. Its filename is its destination in the job.

If the submission fails before its JobSubmitted is in the log (a bad field, a bad name, a client
that went away), the uploads are released and the filestore deletes what nothing else needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, BinaryIO

import falcon

from freight_server.services.api.errors import ApiError
from freight_server.services.api.submission import InvalidRequest
from freight_server.shared.config import Settings
from freight_server.shared.filestore_client import FilestoreClient
from freight_server.shared.job_paths import InvalidPath, input_destination
from freight_server.shared.rpc import TransferError, read_chunks

log = logging.getLogger(__name__)

MAX_INPUT_FILES = 10_000


class InputUploads:
    def __init__(self, filestore: FilestoreClient | None, settings: Settings):
        self._filestore = filestore
        self._workdir = settings.job_workdir
        self._max_bytes = settings.max_request_bytes
        self._received = 0
        self._uploads: list[str] = []
        self.files: list[dict[str, Any]] = []  # JobSubmitted's `files`: {path, digest, size}

    def receive(self, filename: str, stream: BinaryIO) -> None:
        """forms.py's on_file hook: check the part's name, then stream it to the filestore."""
        part = f"file[] #{len(self.files) + 1} ({_shorten(filename)})"
        try:
            destination = input_destination(filename, self._workdir)
        except InvalidPath as exc:
            raise InvalidRequest(part, str(exc)) from None
        if any(f["path"] == destination for f in self.files):
            raise InvalidRequest(part, f"another part also goes to {destination}")
        if len(self.files) >= MAX_INPUT_FILES:
            raise InvalidRequest(part, f"more than {MAX_INPUT_FILES} files; send an archive")
        if self._filestore is None:
            raise InvalidRequest(part, "file uploads are not accepted here")
        try:
            stored = self._filestore.upload(self._counted(stream))
        except TransferError as exc:
            raise ApiError(
                falcon.HTTP_503,
                "unavailable",
                f"the filestore could not take {part}: {exc}; nothing was accepted",
                headers={"Retry-After": "2"},
            ) from None
        self._uploads.append(stored.upload)
        # `upload` names the filestore's hold on the bytes, which ends once it reads this job.
        self.files.append(
            {
                "path": destination,
                "digest": stored.digest,
                "size": stored.size,
                "upload": stored.upload,
            }
        )

    def event_data(self) -> dict[str, Any]:
        return {"files": self.files} if self.files else {}

    def discard(self) -> None:
        """The submission failed: let the filestore delete what was uploaded for it."""
        if not self._uploads or self._filestore is None:
            return
        try:
            self._filestore.release(self._uploads)
        except TransferError as exc:
            # The holds then expire after FREIGHT_UPLOAD_GRACE, and the blobs go with them.
            log.warning("could not release %d uploads: %s", len(self._uploads), exc)

    def _counted(self, stream: BinaryIO) -> Iterator[bytes]:
        for chunk in read_chunks(stream):
            self._received += len(chunk)
            if self._received > self._max_bytes:
                raise ApiError(
                    falcon.HTTP_413,
                    "too_large",
                    f"the files are larger than {self._max_bytes} bytes (FREIGHT_MAX_UPLOAD_BYTES)",
                )
            yield chunk


def _shorten(name: str, limit: int = 80) -> str:
    shown = repr(name)
    return shown if len(shown) <= limit else f"{shown[:limit]}...'"
