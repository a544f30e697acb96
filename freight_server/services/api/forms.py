"""Read a submission's fields from JSON, a URL-encoded form or a multipart form."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import falcon
from falcon.typing import ReadableIO
from falcon.util import BufferedReader

from freight_server.services.api.errors import ApiError
from freight_server.services.api.submission import InvalidRequest

MAX_JSON_BYTES = 4 * 1024 * 1024
FILE_FIELDS = ("file[]", "file")
# How much of a multipart body is read from the server at a time. Falcon's own default (32 KiB)
# makes gunicorn copy its whole read-ahead (up to 1 MiB) on every read: a large upload's bytes
# were copied some 30 times over before reaching the filestore.
MULTIPART_READ_BYTES = 1024 * 1024

Fields = dict[str, list[Any]]
# Receives one uploaded file (its destination name and a stream of its bytes).
FileSink = Callable[[str, BinaryIO], None]


def read_fields(req: falcon.Request, max_bytes: int, on_file: FileSink | None = None) -> Fields:
    if req.content_length is not None and req.content_length > max_bytes:
        raise _too_large(max_bytes)
    media_type = (req.content_type or "").split(";")[0].strip().lower()
    if media_type == falcon.MEDIA_JSON:
        return _json_fields(req)
    if media_type == falcon.MEDIA_URLENCODED:
        return _urlencoded_fields(req)
    if media_type == falcon.MEDIA_MULTIPART:
        return _multipart_fields(_multipart_parts(req, max_bytes), on_file)
    raise ApiError(
        falcon.HTTP_415,
        "unsupported_media_type",
        "send application/json, multipart/form-data or application/x-www-form-urlencoded",
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(falcon.HTTP_413, "too_large", f"the request is larger than {limit} bytes")


def _json_fields(req: falcon.Request) -> Fields:
    body = req.bounded_stream.read(MAX_JSON_BYTES + 1)
    if len(body) > MAX_JSON_BYTES:
        raise _too_large(MAX_JSON_BYTES)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("body", f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidRequest("body", "must be a JSON object")
    return {name: [value] for name, value in document.items() if value is not None}


def _urlencoded_fields(req: falcon.Request) -> Fields:
    if req.content_length is not None and req.content_length > MAX_JSON_BYTES:
        raise _too_large(MAX_JSON_BYTES)
    try:
        form = req.get_media()
    except falcon.MediaMalformedError as exc:
        raise InvalidRequest("body", f"is not a valid form ({exc.description})") from None
    return {name: value if isinstance(value, list) else [value] for name, value in form.items()}


def _multipart_parts(req: falcon.Request, max_bytes: int) -> Iterable[Any]:
    handler = req.options.media_handlers[falcon.MEDIA_MULTIPART]
    if req.content_length is not None:
        body = BufferedReader(req.stream.read, req.content_length, MULTIPART_READ_BYTES)
    else:
        # Chunked, its size unknown (a file from a pipe): falcon's parser bounds its reads by
        # the length, so it reads through a count that refuses the body once past the limit.
        capped = _CappedBody(req.stream, max_bytes)
        body = BufferedReader(capped.read, max_bytes + 1, MULTIPART_READ_BYTES)
    form: Iterable[Any] = handler.deserialize(body, req.content_type, req.content_length)  # type: ignore[assignment]
    return form


class _CappedBody:
    """A body of unknown length, read up to `limit` bytes: past it, 413."""

    def __init__(self, stream: ReadableIO, limit: int):
        self._stream = stream
        self._limit = limit
        self._read = 0

    def read(self, size: int) -> bytes:
        chunk = self._stream.read(size)
        self._read += len(chunk)
        if self._read > self._limit:
            raise _too_large(self._limit)
        return chunk


def _multipart_fields(parts: Iterable[Any], on_file: FileSink | None) -> Fields:
    fields: Fields = defaultdict(list)
    try:
        for part in parts:
            if part.name in FILE_FIELDS or part.filename:
                if on_file is None:
                    raise InvalidRequest(
                        part.name or "file[]", "file uploads are not accepted here"
                    )
                on_file(part.filename or "", part.stream)
                continue
            try:
                fields[part.name].append(part.get_text())
            except UnicodeDecodeError:
                raise InvalidRequest(part.name, "is not valid UTF-8 text") from None
    except falcon.MediaMalformedError as exc:
        raise InvalidRequest("body", f"malformed multipart form: {exc.description}") from None
    return dict(fields)
