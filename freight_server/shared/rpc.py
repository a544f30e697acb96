"""Conversations over RabbitMQ: requests, replies and windowed byte streams between services.

The filestore and the runners move files this way; bytes never touch the event log. Each process
has one Node: a private queue for what is addressed to it and, if it serves requests, a named
service queue. A message's correlation id names its conversation and the node hands it to that
conversation's inbox. A new request on the service queue starts a session: the handler runs on
its own thread with the conversation, so long transfers never block pika's I/O thread.

Bytes move in chunks of at most CHUNK_BYTES, and a sender is never more than a window of chunks
ahead of what the receiver has taken, so memory stays bounded whatever the size: in both
processes and in the broker. Every send is confirmed by the broker and routed with `mandatory`:
a peer whose queue is gone is an immediate PeerUnavailable, a silent one a TransferTimeout.
Messages sent together (`send_all`) share one confirm: one round trip to the broker, not one each;
a stream's chunks go out in batches, the next batch read while the one before awaits its confirm
(`post`), so a transfer never stops to wait for the broker.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pika

from freight_server.shared.bus import (
    AMQP_ERRORS,
    BrokerUnavailable,
    Message,
    Publisher,
    Publishing,
    connect,
)

log = logging.getLogger(__name__)

# A chunk is one message: large enough that a transfer is a few dozen messages and confirms per
# 100 MiB, small enough to stay far under RabbitMQ's message size limit (128 MiB by default)
# and to go out in the broker's frames (128 KiB by default) without holding others up for long.
CHUNK_BYTES = 4 * 1024 * 1024
WINDOW = 4  # chunks in flight per transfer: at most 16 MiB of one transfer held anywhere
# How long a sender waits for credit: its reader may be a slow client at the end of an HTTP
# download, which is not a dead one (a dead one's inbox goes, and the next send fails).
SLOW_READER = 600.0

# The kinds every conversation may carry; a request's kind is its operation's name.
ERROR = "error"
HEAD = "head"
CHUNK = "chunk"
END = "end"
CREDIT = "credit"
CANCEL = "cancel"


class TransferError(RuntimeError):
    """A conversation failed: the peer is gone, silent, or refused."""


class PeerUnavailable(TransferError):
    """Nothing listens at the peer's queue (or RabbitMQ is away): nothing was delivered."""


class TransferTimeout(TransferError):
    pass


class RemoteError(TransferError):
    """The peer answered with an error; `code` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Envelope:
    kind: str
    conversation: str
    reply_to: str | None
    headers: Mapping[str, Any]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RemoteError("invalid", f"a {self.kind} message that is not JSON: {exc}") from None


Handler = Callable[[Envelope, "Conversation"], None]


@dataclass(frozen=True)
class Outgoing:
    """One message of a batch for `Conversation.send_all`."""

    kind: str
    body: bytes = b""
    headers: Mapping[str, Any] | None = None


class Sent:
    """Messages handed to the broker: `wait()` returns once it confirmed them all."""

    def __init__(self, publishing: Publishing, peer: str):
        self._publishing = publishing
        self._peer = peer

    def wait(self) -> None:
        try:
            self._publishing.wait()
        except BrokerUnavailable as exc:
            raise PeerUnavailable(f"could not reach {self._peer}: {exc}") from None


class Posting:
    """Batches posted one after another on a conversation, at most `depth` of them awaiting
    their confirm: the sender prepares the next while the broker takes the last."""

    def __init__(self, conversation: Conversation, depth: int = 1):
        self._conversation = conversation
        self._depth = depth
        self._pending: deque[Sent] = deque()

    def post(self, messages: Sequence[Outgoing]) -> None:
        """Raises what an earlier batch's failed confirm raised, if one did."""
        while len(self._pending) >= self._depth:
            self._pending.popleft().wait()
        self._pending.append(self._conversation.post(messages))

    def flush(self) -> None:
        """Wait until every batch posted is confirmed."""
        while self._pending:
            self._pending.popleft().wait()


def outgoing(
    kind: str, body: bytes = b"", *, data: Any = None, headers: Mapping[str, Any] | None = None
) -> Outgoing:
    """A message whose body is `body`, or `data` as JSON."""
    if data is not None:
        body = json.dumps(data, separators=(",", ":")).encode()
    return Outgoing(kind, body, headers)


class Conversation:
    """One side of an exchange with one peer; messages for it arrive in order in its inbox."""

    def __init__(self, node: Node, conversation_id: str, peer: str, timeout: float):
        self.id = conversation_id
        self.peer = peer
        self.timeout = timeout
        self._node = node
        self._inbox: queue.Queue[Envelope] = queue.Queue()

    def send(
        self,
        kind: str,
        body: bytes = b"",
        *,
        data: Any = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        self.send_all([outgoing(kind, body, data=data, headers=headers)])

    def send_all(self, messages: Sequence[Outgoing]) -> None:
        """Send `messages` in order and wait for the broker to take them all (one confirm)."""
        self.post(messages).wait()

    def post(self, messages: Sequence[Outgoing]) -> Sent:
        """Hand `messages` over without waiting for their confirm: `wait()` on the answer
        raises what `send_all` would have. Posts go out in order."""
        return self._node.post(self.peer, self.id, messages)

    def receive(self, timeout: float | None = None) -> Envelope:
        """The next message; an error from the peer is raised as RemoteError."""
        wait = self.timeout if timeout is None else timeout
        try:
            envelope = self._inbox.get(timeout=wait)
        except queue.Empty:
            raise TransferTimeout(f"{self.peer} did not answer within {wait:g}s") from None
        if envelope.kind == ERROR:
            error = envelope.json()
            raise RemoteError(str(error.get("code")), str(error.get("message")))
        return envelope

    def expect(self, kind: str, timeout: float | None = None) -> Envelope:
        envelope = self.receive(timeout)
        if envelope.kind != kind:
            raise TransferError(f"{self.peer} sent {envelope.kind!r} where {kind!r} was due")
        return envelope

    def fail(self, code: str, message: str) -> None:
        """Tell the peer this conversation failed; it is over either way."""
        try:
            self.send(ERROR, data={"code": code, "message": message})
        except TransferError:
            log.debug("could not tell %s that %s failed: %s", self.peer, self.id, message)

    def close(self) -> None:
        self._node.forget(self.id)

    def deliver(self, envelope: Envelope) -> None:
        self._inbox.put(envelope)

    def __enter__(self) -> Conversation:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class NodeConfig:
    amqp_url: str
    name: str  # connection name, and the prefix of the private queue
    service_queue: str | None = None  # exclusive: one process serves it
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    timeout: float = 30.0  # how long a conversation waits for its peer
    max_sessions: int = 64  # requests served at once; more are refused as busy


class Node:
    def __init__(self, config: NodeConfig, publisher: Publisher):
        self._config = config
        self._publisher = publisher
        self._conversations: dict[str, Conversation] = {}
        self._lock = threading.Lock()
        self._sessions = threading.BoundedSemaphore(config.max_sessions)
        self._stop = threading.Event()
        self._address: str | None = None
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{config.name}-node", daemon=True)

    @property
    def timeout(self) -> float:
        return self._config.timeout

    def start(self, wait: float = 10.0) -> Node:
        self._thread.start()
        if not self.ready.wait(wait):
            log.warning("%s: RabbitMQ not reached yet; will keep trying", self._config.name)
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def conversation(
        self, peer: str, timeout: float | None = None, connect_within: float | None = None
    ) -> Conversation:
        """A new conversation with the service listening at `peer`; `timeout` is how long it
        waits for each answer, `connect_within` how long for RabbitMQ if it is away."""
        timeout = self._config.timeout if timeout is None else timeout
        if not self.ready.wait(timeout if connect_within is None else connect_within):
            raise PeerUnavailable("RabbitMQ is unreachable")
        conversation = Conversation(self, uuid.uuid4().hex, peer, timeout)
        with self._lock:
            self._conversations[conversation.id] = conversation
        return conversation

    def send(self, peer: str, conversation: str, messages: Sequence[Outgoing]) -> None:
        self.post(peer, conversation, messages).wait()

    def post(self, peer: str, conversation: str, messages: Sequence[Outgoing]) -> Sent:
        address = self._address
        if address is None:
            raise PeerUnavailable("RabbitMQ is unreachable")
        batch = [
            Message(
                "",
                peer,
                m.body,
                pika.BasicProperties(
                    type=m.kind,
                    correlation_id=conversation,
                    reply_to=address,
                    headers=dict(m.headers) if m.headers else None,
                ),
            )
            for m in messages
        ]
        return Sent(self._publisher.publish_async(batch), peer)

    def forget(self, conversation: str) -> None:
        with self._lock:
            self._conversations.pop(conversation, None)

    # -- the node's own thread -------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._consume()
                backoff = 0.2
            except AMQP_ERRORS as exc:
                log.warning(
                    "%s: lost RabbitMQ (%r); retrying in %.1fs", self._config.name, exc, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _consume(self) -> None:
        config = self._config
        connection = connect(config.amqp_url, config.name)
        try:
            channel = connection.channel()
            address = f"{config.name}.inbox.{uuid.uuid4().hex[:12]}"
            channel.queue_declare(address, exclusive=True, auto_delete=True)
            channel.basic_consume(address, self._on_message, auto_ack=True)
            if config.service_queue:
                # Exclusive: a second process serving the same queue fails loudly here.
                channel.queue_declare(config.service_queue, exclusive=True, auto_delete=True)
                channel.basic_consume(config.service_queue, self._on_message, auto_ack=True)
            self._address = address
            self.ready.set()
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            self.ready.clear()
            self._address = None
            self._abandon_all("the connection to RabbitMQ was lost")
            try:
                if connection.is_open:
                    connection.close()
            except AMQP_ERRORS:
                pass

    def _on_message(
        self, _channel: Any, _method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        envelope = Envelope(
            kind=properties.type or "",
            conversation=properties.correlation_id or "",
            reply_to=properties.reply_to,
            headers=properties.headers or {},
            body=body,
        )
        with self._lock:
            conversation = self._conversations.get(envelope.conversation)
        if conversation is not None:
            conversation.deliver(envelope)
            return
        handler = self._config.handlers.get(envelope.kind)
        if envelope.reply_to is None or not envelope.conversation or handler is None:
            # A late chunk or credit for a conversation that already ended, or noise.
            log.debug("%s: dropped a %r message", self._config.name, envelope.kind)
            return
        session = Conversation(self, envelope.conversation, envelope.reply_to, self.timeout)
        with self._lock:
            self._conversations[session.id] = session
        threading.Thread(
            target=self._serve,
            args=(handler, envelope, session),
            name=f"{envelope.kind}-{session.id[:8]}",
            daemon=True,
        ).start()

    def _serve(self, handler: Handler, request: Envelope, session: Conversation) -> None:
        if not self._sessions.acquire(blocking=False):
            session.fail("busy", f"{self._config.name} is serving too many requests; retry")
            session.close()
            return
        try:
            handler(request, session)
        except TransferError as exc:
            log.info("%s %s ended: %s", request.kind, session.id[:8], exc)
        except Exception as exc:  # noqa: BLE001 - the peer must hear of it, not wait it out
            log.exception("%s %s failed", request.kind, session.id[:8])
            session.fail("internal", f"{self._config.name} failed: {exc!r}")
        finally:
            session.close()
            self._sessions.release()

    def _abandon_all(self, reason: str) -> None:
        with self._lock:
            conversations = list(self._conversations.values())
        body = json.dumps({"code": "disconnected", "message": reason}).encode()
        for conversation in conversations:
            conversation.deliver(Envelope(ERROR, conversation.id, None, {}, body))


# -- windowed streams ------------------------------------------------------------------------


def send_stream(
    conversation: Conversation, head: Mapping[str, Any], chunks: Iterable[bytes], window: int
) -> bool:
    """Push `head`, then `chunks`, never more than `window` ahead of the receiver's credit.
    Returns False if the receiver cancelled.

    Chunks go out in batches of up to half the window (the head with the first, the end with
    the last), one publish and one confirm each; the next batch is read while the one before
    awaits its confirm. What this side holds is at most the window: a batch in the broker's
    hands and one being gathered."""
    posting = Posting(conversation)
    batch_size = max(1, window // 2)
    batch = [outgoing(HEAD, data=dict(head))]
    granted, sent = window, 0
    for chunk in chunks:
        if sent >= granted:
            if batch:
                posting.post(batch)
                batch = []
            while sent >= granted:
                envelope = conversation.receive(max(conversation.timeout, SLOW_READER))
                if envelope.kind == CANCEL:
                    return False
                if envelope.kind == CREDIT:
                    granted = max(granted, int(envelope.headers.get("granted", 0)))
        batch.append(Outgoing(CHUNK, chunk, {"seq": sent}))
        sent += 1
        if len(batch) >= batch_size:
            posting.post(batch)
            batch = []
    batch.append(Outgoing(END, b"", {"chunks": sent}))
    posting.post(batch)
    posting.flush()
    return True


class IncomingStream:
    """The receiving side of `send_stream`: its head, then its chunks as an iterator.

    It grants credit as chunks are taken, so the sender runs at the reader's pace; closing it
    early tells the sender to stop. It owns the conversation and closes it."""

    def __init__(self, conversation: Conversation, window: int, timeout: float | None = None):
        self._conversation = conversation
        self._window = window
        self._timeout = timeout
        self._finished = False
        try:
            self.head: dict[str, Any] = conversation.expect(HEAD, timeout).json()
        except BaseException:
            conversation.close()
            raise

    def __iter__(self) -> Iterator[bytes]:
        conversation, window = self._conversation, self._window
        received, granted = 0, window
        # Credit is posted without waiting for its confirm (the reader goes on reading); the
        # one before is confirmed by the time the next goes, or its failure raised then.
        credits = Posting(conversation)
        try:
            while True:
                envelope = conversation.receive(self._timeout)
                if envelope.kind == END:
                    if envelope.headers.get("chunks") != received:
                        raise TransferError(f"{conversation.peer} ended a stream early")
                    self._finished = True
                    return
                if envelope.kind != CHUNK or envelope.headers.get("seq") != received:
                    raise TransferError(f"{conversation.peer} sent a stream out of order")
                received += 1
                if granted - received <= window // 2:
                    granted = received + window
                    credits.post([Outgoing(CREDIT, b"", {"granted": granted})])
                yield envelope.body
        finally:
            self.close()

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            with suppress(TransferError):
                self._conversation.send(CANCEL)
        self._conversation.close()

    def __enter__(self) -> IncomingStream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def rechunk(pieces: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Pieces of any size as chunks of exactly `size` bytes (the last one shorter). Pieces are
    gathered, then joined once: a chunk made of pieces is copied once, a piece of exactly
    `size` not at all."""
    held: list[bytes] = []
    length = 0
    for piece in pieces:
        if not held and len(piece) == size:
            yield piece  # the usual case: no copy
            continue
        if not piece:
            continue
        held.append(piece)
        length += len(piece)
        if length < size:
            continue
        joined = b"".join(held)
        if length == size:
            held, length = [], 0
            yield joined
            continue
        at = 0
        with memoryview(joined) as view:
            while length - at >= size:
                yield bytes(view[at : at + size])
                at += size
            held = [bytes(view[at:])] if at < length else []
        length -= at
    if held:
        yield b"".join(held)


def read_chunks(stream: Any, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """A binary stream's bytes in chunks of at most `size`."""
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk
