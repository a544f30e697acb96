"""The client side of the filestore (and of a runner's live files), used by the API and runners.

Every call is a conversation over RabbitMQ (shared.rpc); failures are TransferError: the peer is
not listening (PeerUnavailable), silent past the timeout (TransferTimeout), or refused
(RemoteError with a protocol code such as `not_found`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from freight_server.shared import filestore_protocol as protocol
from freight_server.shared.filestore_protocol import StoredBlob
from freight_server.shared.rpc import (
    CHUNK,
    WINDOW,
    Conversation,
    Envelope,
    IncomingStream,
    Node,
    Outgoing,
    PeerUnavailable,
    Posting,
    TransferError,
    outgoing,
    rechunk,
)

# How long a request waits for the filestore to be listening (it may be starting or restarting)
# before the caller hears that it is not.
PATIENCE = 5.0
# Chunks an upload sends in one publish (one confirm): the filestore ACKs every WINDOW // 2.
BATCH = WINDOW // 2


@dataclass(frozen=True)
class LogChunk:
    records: bytes  # whole records (shared.filestore_protocol.log_records)
    next: int  # the offset to read on from
    closed: bool  # the attempt's output has ended and this read reached its end


class FilestoreClient:
    def __init__(self, node: Node, namespace: str, patience: float = PATIENCE):
        self._node = node
        self._queue = protocol.filestore_queue(namespace)
        self._patience = patience

    def upload(self, pieces: Iterable[bytes]) -> StoredBlob:
        """Store the bytes `pieces` yields; held by the filestore until a job refers to them.
        Their digest is the filestore's, of the bytes it wrote (they are hashed once, there).

        If `pieces` raises (the client went away), the upload is aborted and nothing is kept."""
        upload = _Upload(rechunk(pieces))
        # The request goes out with the first chunks (and the commit, for a small blob): nothing
        # is sent before they are read, so a source that fails that early leaves nothing to abort.
        with self._request_all(upload.batch()) as conversation:
            try:
                return upload.finish(conversation)
            except BaseException:
                with suppress(TransferError):
                    conversation.send(protocol.ABORT)
                raise

    def upload_many(self, blobs: Sequence[bytes]) -> list[StoredBlob]:
        """Store small blobs (protocol.PUT_MANY_BYTES at most in all) in one request; held
        like uploads. Their digests are the filestore's, in their order."""
        if not blobs:
            return []
        reply = self._ask(protocol.PUT_MANY, body=protocol.pack_blobs(blobs)).json()
        return [StoredBlob(b["digest"], int(b["size"]), b["upload"]) for b in reply["blobs"]]

    def download(self, digest: str, patience: float | None = None) -> IncomingStream:
        """The blob's bytes: `.head["size"]`, then iterate; `not_found` if it is gone."""
        asked = {"digest": digest, "window": WINDOW}
        conversation = self._request(protocol.GET, asked, patience)
        return IncomingStream(conversation, WINDOW)

    def release(self, uploads: Sequence[str]) -> None:
        """These uploads will never be used (their submission failed): let their blobs go."""
        if not uploads:
            return
        with self._request(protocol.RELEASE, {"uploads": list(uploads)}) as conversation:
            conversation.expect(protocol.REPLY)

    # -- logs: one batch or one read per request -----------------------------------------------

    def append_log(self, job_id: str, attempt: int, at: int, records: bytes) -> int:
        """Append whole records to an attempt's log, which the caller knows is `at` bytes long;
        returns its new size. Retrying a batch whose answer was lost does not repeat it."""
        headers = {"job_id": job_id, "attempt": attempt, "at": at}
        reply = self._ask(protocol.LOG_APPEND, body=records, headers=headers)
        return int(reply.json()["size"])

    def close_log(self, job_id: str, attempt: int) -> None:
        self._ask(protocol.LOG_CLOSE, {"job_id": job_id, "attempt": attempt})

    def log_state(self, job_id: str, attempt: int) -> dict[str, Any]:
        state: dict[str, Any] = self._ask(
            protocol.LOG_STATE, {"job_id": job_id, "attempt": attempt}
        ).json()
        return state

    def read_log(self, job_id: str, attempt: int, offset: int, streams: Sequence[str]) -> LogChunk:
        asked = {"job_id": job_id, "attempt": attempt, "offset": offset, "streams": list(streams)}
        reply = self._ask(protocol.LOG_READ, asked)
        headers = reply.headers
        return LogChunk(reply.body, int(headers["next"]), bool(headers["closed"]))

    def tail_log(
        self, job_id: str, attempt: int, lines: int, streams: Sequence[str]
    ) -> tuple[int, int]:
        asked = {"job_id": job_id, "attempt": attempt, "lines": lines, "streams": list(streams)}
        reply = self._ask(protocol.LOG_TAIL, asked).json()
        return int(reply["offset"]), int(reply["skip"])

    def save_log(self, job_id: str, attempt: int) -> dict[str, StoredBlob]:
        """The attempt's stdout and stderr, from its (closed) log, stored as blobs."""
        saved = self._ask(protocol.LOG_SAVE, {"job_id": job_id, "attempt": attempt}).json()
        return {
            stream: StoredBlob(blob["digest"], int(blob["size"]), blob["upload"])
            for stream, blob in saved.items()
        }

    def _ask(
        self,
        kind: str,
        data: Any = None,
        body: bytes = b"",
        headers: Mapping[str, Any] | None = None,
    ) -> Envelope:
        with self._request(kind, data, body=body, headers=headers) as conversation:
            return conversation.expect(protocol.REPLY)

    def _request(
        self,
        kind: str,
        data: Any = None,
        patience: float | None = None,
        body: bytes = b"",
        headers: Mapping[str, Any] | None = None,
    ) -> Conversation:
        return self._request_all([outgoing(kind, body, data=data, headers=headers)], patience)

    def _request_all(
        self, messages: Sequence[Outgoing], patience: float | None = None
    ) -> Conversation:
        """A conversation opened with `messages` (a request and what follows it at once),
        waiting a little for a filestore to listen."""
        deadline = time.monotonic() + (self._patience if patience is None else patience)
        pause = 0.2
        while True:
            remaining = max(0.1, deadline - time.monotonic())
            conversation = self._node.conversation(self._queue, connect_within=remaining)
            try:
                conversation.send_all(messages)
                return conversation
            except PeerUnavailable:
                conversation.close()
                if time.monotonic() >= deadline:
                    raise
            except BaseException:
                conversation.close()
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


class RunnerFilesClient:
    """Reads a running job's files live, through the runner that runs it."""

    def __init__(self, node: Node, namespace: str):
        self._node = node
        self._namespace = namespace

    def read(self, runner_id: str, job_id: str, attempt: int, path: str) -> IncomingStream:
        """`.head["type"]` is "file" (then iterate its bytes) or "dir" (`.head["entries"]`)."""
        queue = protocol.runner_files_queue(self._namespace, runner_id)
        conversation = self._node.conversation(queue)
        try:
            conversation.send(
                protocol.LIVE,
                data={"job_id": job_id, "attempt": attempt, "path": path, "window": WINDOW},
            )
        except BaseException:
            conversation.close()
            raise
        return IncomingStream(conversation, WINDOW)


class _Upload:
    """The client's side of a put: PUT, then CHUNKs never more than WINDOW beyond the last ACK
    (the window both sides know, so nothing waits for the filestore before sending), then COMMIT
    {size}: the filestore hashes what it wrote and answers with its digest; the chunks' `seq`
    and the size make a lost, repeated or reordered chunk a failed upload.

    Chunks go out in batches of BATCH, each batch one publish and one confirm, so the broker's
    round trip is paid once per batch rather than once per chunk; a batch is also cut short
    when the window is full. A blob bigger than one batch is read on while the batch before
    awaits its confirm: what is held here is at most two batches, a window."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._size = 0
        self._sent = 0  # chunks handed to the broker or gathered into the batch
        self._acked = 0
        self._finished = False
        self._started = False

    def batch(self) -> list[Outgoing]:
        """The next messages to send, gathered while the window has room: up to BATCH chunks,
        and the COMMIT once the source is spent. The first batch begins with the PUT."""
        batch = [] if self._started else [outgoing(protocol.PUT)]
        self._started = True
        gathered = 0
        while gathered < BATCH and self._sent - self._acked < WINDOW:
            chunk = next(self._chunks, None)
            if chunk is None:
                batch.append(outgoing(protocol.COMMIT, data={"size": self._size}))
                self._finished = True
                break
            self._size += len(chunk)
            batch.append(Outgoing(CHUNK, chunk, {"seq": self._sent}))
            self._sent += 1
            gathered += 1
        return batch

    def finish(self, conversation: Conversation) -> StoredBlob:
        """Send the rest (the first batch is out) and wait for COMMITTED."""
        posting = Posting(conversation)
        while not self._finished:
            while self._sent - self._acked >= WINDOW:
                self._acked = max(self._acked, _acked(conversation))
            # Read while the batch before awaits its confirm; posting it waits for that one.
            posting.post(self.batch())
        posting.flush()
        while True:
            message = conversation.receive()
            if message.kind == protocol.COMMITTED:
                committed = message.json()
                if int(committed["size"]) != self._size:
                    raise TransferError(
                        f"the filestore stored {committed['size']} bytes of {self._size} sent"
                    )
                return StoredBlob(committed["digest"], int(committed["size"]), committed["upload"])
            if message.kind != protocol.ACK:
                raise TransferError(f"the filestore sent {message.kind!r} during an upload")


def _acked(conversation: Conversation) -> int:
    return int(conversation.expect(protocol.ACK).headers.get("acked", 0))
