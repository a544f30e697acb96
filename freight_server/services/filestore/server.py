"""The filestore's requests: put (an upload), get (a download), release (an abandoned upload),
and jobs' logs (append, close, state, read, tail). The protocol is described in
freight_server/shared/filestore_protocol.py and docs/files.md."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from freight_server.services.filestore import schema
from freight_server.services.filestore.blobs import (
    BlobBatch,
    BlobMismatch,
    BlobNotFound,
    BlobStore,
    BlobWriter,
    Packed,
)
from freight_server.services.filestore.logs import LogError, LogStore
from freight_server.services.filestore.retention import Retention
from freight_server.shared import filestore_protocol as protocol
from freight_server.shared.db import in_slices, insert_many
from freight_server.shared.filestore_protocol import STREAM_IDS, STREAMS
from freight_server.shared.rpc import (
    CHUNK,
    CHUNK_BYTES,
    WINDOW,
    Conversation,
    Envelope,
    Handler,
    Outgoing,
    Posting,
    send_stream,
)

log = logging.getLogger(__name__)

LOG_READ_BYTES = 1024 * 1024  # the most of a log one read answers with (one message)


class FilestoreServer:
    def __init__(
        self,
        store: BlobStore,
        logs: LogStore,
        engine: sa.Engine,
        retention: Retention,
        upload_grace: timedelta,
        clock: Callable[[], datetime],
    ):
        self._store = store
        self._logs = logs
        self._engine = engine
        self._retention = retention
        self._grace = upload_grace
        self._clock = clock

    def handlers(self) -> Mapping[str, Handler]:
        return {
            protocol.PUT: self.put,
            protocol.PUT_MANY: self.put_many,
            protocol.GET: self.get,
            protocol.RELEASE: self.release,
            protocol.LOG_APPEND: self._logged(self.log_append),
            protocol.LOG_CLOSE: self._logged(self.log_close),
            protocol.LOG_STATE: self._logged(self.log_state),
            protocol.LOG_READ: self._logged(self.log_read),
            protocol.LOG_TAIL: self._logged(self.log_tail),
            protocol.LOG_SAVE: self._logged(self.log_save),
        }

    def put(self, request: Envelope, conversation: Conversation) -> None:
        writer = self._store.begin()
        # ACKs go without waiting for their confirm (the next chunk is written meanwhile); the
        # one before is confirmed when the next is posted, or its failure raised then.
        acks = Posting(conversation)
        try:
            # No READY: the client sends its first WINDOW chunks right behind the PUT.
            received = 0
            while True:
                message = conversation.receive()
                if message.kind == CHUNK:
                    if message.headers.get("seq") != received or len(message.body) > CHUNK_BYTES:
                        conversation.fail(protocol.INVALID, "chunks out of order or too large")
                        return
                    writer.write(message.body)
                    received += 1
                    if received % (WINDOW // 2) == 0:
                        acks.post([Outgoing(protocol.ACK, b"", {"acked": received})])
                elif message.kind == protocol.COMMIT:
                    self._commit(writer, message.json(), conversation)
                    return
                elif message.kind == protocol.ABORT:
                    return
                else:
                    conversation.fail(protocol.INVALID, f"unexpected {message.kind!r} in an upload")
                    return
        except OSError as exc:
            log.error("upload %s failed: %s", conversation.id[:8], exc)
            conversation.fail("unavailable", f"the filestore could not write: {exc.strerror}")
        finally:
            writer.discard()  # nothing left once published

    def _commit(self, writer: BlobWriter, claim: dict, conversation: Conversation) -> None:
        """The client claims the size it sent, and may claim a digest; the blob's digest is the
        one of the bytes written here, hashed as they were written."""
        digest, size = claim.get("digest"), claim.get("size")
        if digest is None:
            digest = writer.written()[0]
        if not isinstance(digest, str) or not protocol.DIGEST.match(digest):
            conversation.fail(protocol.INVALID, f"{digest!r} is not a sha256 digest")
            return
        if not isinstance(size, int) or size < 0:
            conversation.fail(protocol.INVALID, f"{size!r} is not a size")
            return
        try:
            writer.seal(digest, size)
        except BlobMismatch as exc:
            conversation.fail(protocol.MISMATCH, str(exc))
            return
        self._keep(writer, {digest: size}, conversation.id)
        conversation.send(
            protocol.COMMITTED, data={"digest": digest, "size": size, "upload": conversation.id}
        )

    def _keep(
        self,
        staged: BlobWriter | BlobBatch,
        sizes: Mapping[str, int],
        upload: str,
        batch: bool = False,
    ) -> dict[str, str]:
        """Record the staged blobs (digest → size) not stored yet, where they will lie, and hold
        them for FREIGHT_UPLOAD_GRACE: by the upload `upload` names; or, for a batch, those it
        stores by one hold of the batch's (`upload`, named on each) and those already stored
        by a hold each. Then make the new blobs readable. All under the lock retention deletes
        under: a blob cannot be collected between the two. Returns each blob's upload: what a
        job that refers to it names, to end its hold."""
        now = self._clock()
        expires = now + self._grace
        with self._retention.lock, self._engine.begin() as connection:
            known = self._known(connection, sizes.keys())
            held_by = upload if batch else None
            new = [
                _blob_row(digest, size, now, staged.place_of(digest, size), held_by)
                for digest, size in sizes.items()
                if digest not in known
            ]
            insert_many(connection, schema.blobs, new)
            if not batch:
                holders = dict.fromkeys(sizes, upload)
            else:
                holders = {row["digest"]: upload for row in new} | _hold_names(sorted(known))
                if new:
                    hold = {"upload": upload, "expires_at": expires}
                    connection.execute(schema.batch_holds.insert(), hold)
            holds = [
                {"upload": u, "digest": d, "expires_at": expires}
                for d, u in holders.items()
                if u != held_by
            ]
            insert_many(connection, schema.holds, holds)
            staged.publish({row["digest"] for row in new})
        return holders

    def put_many(self, request: Envelope, conversation: Conversation) -> None:
        """Small blobs in one request: one sync for their bytes, one transaction for their
        records and holds, one reply."""
        if len(request.body) > protocol.PUT_MANY_BYTES:
            conversation.fail(protocol.INVALID, f"over {protocol.PUT_MANY_BYTES} bytes at once")
            return
        try:
            blobs = protocol.unpack_blobs(request.body)
        except ValueError as exc:
            conversation.fail(protocol.INVALID, f"not a put_many body: {exc}")
            return
        if len(blobs) > protocol.PUT_MANY_BLOBS:
            conversation.fail(protocol.INVALID, f"over {protocol.PUT_MANY_BLOBS} blobs at once")
            return
        # Under the lock from the look at what is stored to the commit: a blob found stored
        # (and so left out of the pack) cannot be collected meanwhile.
        with self._retention.lock:
            try:
                staged = self._store.stage(blobs, self._stored_among)
            except OSError as exc:
                log.error("upload %s failed: %s", conversation.id[:8], exc)
                conversation.fail("unavailable", f"the filestore could not write: {exc.strerror}")
                return
            try:
                sizes = {d: len(b) for d, b in zip(staged.digests, blobs, strict=True)}
                holders = self._keep(staged, sizes, uuid.uuid4().hex, batch=True)
            finally:
                staged.discard()
        stored = [
            {"digest": digest, "size": len(blob), "upload": holders[digest]}
            for digest, blob in zip(staged.digests, blobs, strict=True)
        ]
        conversation.send(protocol.REPLY, data={"blobs": stored})

    def get(self, request: Envelope, conversation: Conversation) -> None:
        asked = request.json()
        digest = str(asked.get("digest"))
        window = min(int(asked.get("window") or WINDOW), WINDOW)
        try:
            reader = self._store.open(digest, self._packed(digest))
        except BlobNotFound:
            conversation.fail(protocol.NOT_FOUND, f"the filestore has no blob {digest}")
            return
        try:
            head = {"digest": digest, "size": reader.size}
            send_stream(conversation, head, reader.chunks(CHUNK_BYTES), window)
        finally:
            reader.close()

    def _stored_among(self, digests: Collection[str]) -> set[str]:
        with self._engine.connect() as connection:
            return self._known(connection, digests)

    @staticmethod
    def _known(connection: sa.Connection, digests: Collection[str]) -> set[str]:
        known: set[str] = set()
        for some in in_slices(sorted(digests)):
            known.update(connection.execute(_STORED, {"digests": some}).scalars())
        return known

    def _packed(self, digest: str) -> Packed | None:
        """Where the blob lies in its pack, if it is in one."""
        with self._engine.connect() as connection:
            row = connection.execute(_PLACE, {"digest": digest}).first()
        if row is None or row.pack is None:
            return None
        return Packed(row.pack, row.pack_offset, row.size)

    def release(self, request: Envelope, conversation: Conversation) -> None:
        uploads = [str(u) for u in request.json().get("uploads") or ()]
        deleted = self._retention.release(uploads)
        conversation.send(protocol.REPLY, data={"released": len(uploads), "deleted": deleted})

    # -- logs --------------------------------------------------------------------------------

    def log_append(self, request: Envelope, conversation: Conversation) -> None:
        job_id, attempt = _log_of(request.headers)
        size = self._logs.append(job_id, attempt, int(request.headers["at"]), request.body)
        conversation.send(protocol.REPLY, data={"size": size})

    def log_close(self, request: Envelope, conversation: Conversation) -> None:
        self._logs.close(*_log_of(request.json()))
        conversation.send(protocol.REPLY, data={})

    def log_state(self, request: Envelope, conversation: Conversation) -> None:
        state = self._logs.state(*_log_of(request.json()))
        data = {"size": state.size, "payload": state.payload, "closed": state.closed}
        conversation.send(protocol.REPLY, data=data)

    def log_read(self, request: Envelope, conversation: Conversation) -> None:
        asked = request.json()
        job_id, attempt = _log_of(asked)
        limit = min(int(asked.get("limit") or LOG_READ_BYTES), LOG_READ_BYTES)
        chunk = self._logs.read(
            job_id, attempt, int(asked.get("offset") or 0), limit, _streams(asked)
        )
        headers = {"next": chunk.next, "closed": chunk.closed, "size": chunk.size}
        conversation.send(protocol.REPLY, chunk.records, headers=headers)

    def log_tail(self, request: Envelope, conversation: Conversation) -> None:
        asked = request.json()
        job_id, attempt = _log_of(asked)
        offset, skip = self._logs.tail(job_id, attempt, int(asked["lines"]), _streams(asked))
        conversation.send(protocol.REPLY, data={"offset": offset, "skip": skip})

    def log_save(self, request: Envelope, conversation: Conversation) -> None:
        """Store the log's streams as blobs, here where the log is, rather than have the
        runner read the container's output once more and send it all again."""
        job_id, attempt = _log_of(request.json())
        writers = {number: self._store.begin() for number in STREAMS}
        try:
            self._logs.split(job_id, attempt, writers)
            saved = {}
            for number, writer in writers.items():
                digest, size = writer.written()
                writer.seal(digest, size)
                upload = uuid.uuid4().hex
                self._keep(writer, {digest: size}, upload)
                saved[STREAMS[number]] = {"digest": digest, "size": size, "upload": upload}
        finally:
            for writer in writers.values():
                writer.discard()
        conversation.send(protocol.REPLY, data=saved)

    @staticmethod
    def _logged(handler: Handler) -> Handler:
        """A log request that cannot be honoured is the client's error, not ours."""

        def handle(request: Envelope, conversation: Conversation) -> None:
            try:
                handler(request, conversation)
            except (LogError, KeyError, TypeError, ValueError) as exc:
                conversation.fail(protocol.INVALID, f"{request.kind}: {exc}")

        return handle


def _blob_row(
    digest: str, size: int, now: datetime, place: Packed | None, held_by: str | None
) -> dict[str, Any]:
    return {
        "digest": digest,
        "size": size,
        "stored_at": now,
        "pack": place.pack if place else None,
        "pack_offset": place.offset if place else None,
        "held_by": held_by,
    }


def _hold_names(digests: list[str]) -> dict[str, str]:
    """An upload's name for each of these blobs, named after one drawn for them all."""
    prefix = uuid.uuid4().hex[:24]
    return {digest: f"{prefix}{n:08x}" for n, digest in enumerate(digests)}


def _log_of(fields: Mapping[str, Any]) -> tuple[str, int]:
    return str(fields["job_id"]), int(fields["attempt"])


def _streams(asked: Mapping[str, Any]) -> set[int]:
    names = asked.get("streams") or list(STREAM_IDS)
    return {STREAM_IDS[name] for name in names}


# Built once: every put and get runs one.
_STORED = sa.select(schema.blobs.c.digest).where(
    schema.blobs.c.digest.in_(sa.bindparam("digests", expanding=True))
)
_PLACE = sa.select(schema.blobs.c.size, schema.blobs.c.pack, schema.blobs.c.pack_offset).where(
    schema.blobs.c.digest == sa.bindparam("digest")
)
