"""pika's connection, with a large message's bytes copied fewer times on their way in and out.

Files cross RabbitMQ in chunks of megabytes, cut into frames of at most the broker's frame_max
(128 KiB by default). pika 1.3, as it comes, copies each byte some three times to marshal it
(a slice of the body, the frame's header prepended, its end appended) and some four times to
read it (each socket read appended to what is left over, each frame sliced out of that, the rest
kept by slicing again, the fragments joined), and reads its socket 4 KiB at a time. On a small
machine that cost as much CPU as hashing the bytes. `LeanSelectConnection` marshals a body frame
with one copy and reads body frames as views of what the socket returned, joined once into the
message; every other frame goes through pika's own code. It is pika's SelectConnection in
everything else (BlockingConnection takes it as its `_impl_class`).

These are pika's internals (`Connection._send_message`, `Connection._on_data_available`, the
transport's read sizes), as of pika 1.3; pyproject.toml keeps pika below 2.
"""

from __future__ import annotations

import struct
from typing import Any

import pika
from pika import frame, spec
from pika.adapters.utils import io_services_utils

_HEADER = struct.Struct(">BHI")  # frame type, channel, payload size
_HEADER_SIZE = _HEADER.size  # 7
_FRAME_END = bytes((spec.FRAME_END,))
_PROTOCOL_HEADER = b"AMQP"

# Socket reads of 256 KiB (a frame and more at the default frame_max), 1 MiB between polls,
# instead of pika's 4 KiB and 100 KiB: class attributes of its transport, so for every
# connection this process opens.
RECV_BYTES = 256 * 1024
CONSUME_BYTES = 1024 * 1024


def tune_reads() -> None:
    """Larger socket reads for every pika connection of this process (idempotent)."""
    transport: Any = getattr(io_services_utils, "_AsyncTransportBase", None)
    if transport is None or not hasattr(transport, "_MAX_RECV_BYTES"):
        return  # not the pika this was written for: its own sizes are correct, only slower
    transport._MAX_RECV_BYTES = max(transport._MAX_RECV_BYTES, RECV_BYTES)
    transport._MAX_CONSUME_BYTES = max(getattr(transport, "_MAX_CONSUME_BYTES", 0), CONSUME_BYTES)


class LeanSelectConnection(pika.SelectConnection):
    """A SelectConnection whose body frames are made and read with one copy each."""

    _frame_buffer: bytes
    _body_max_length: int
    bytes_received: int

    def _send_message(
        self, channel_number: int, method_frame: Any, content: tuple[Any, bytes]
    ) -> None:
        properties, body = content
        length = len(body)
        marshaled = [
            frame.Method(channel_number, method_frame).marshal(),
            frame.Header(channel_number, length, properties).marshal(),
        ]
        step = self._body_max_length
        view = memoryview(body)
        for start in range(0, length, step):
            piece = view[start : start + step]
            header = _HEADER.pack(spec.FRAME_BODY, channel_number, len(piece))
            marshaled.append(b"".join((header, piece, _FRAME_END)))
        self._output_marshaled_frames(marshaled)

    def _on_data_available(self, data_in: bytes) -> None:
        pending = self._frame_buffer
        if not pending:
            self._read_frames(data_in)
            return
        # A frame the last read left unfinished: finish it with the start of this read (a copy
        # of that one frame), then read the rest of this one in place.
        wanted = _frame_length(pending)
        if wanted is None or len(pending) + len(data_in) <= wanted:
            self._frame_buffer = b""
            self._read_frames(pending + data_in)
            return
        taken = wanted - len(pending)
        self._frame_buffer = b""
        self._read_frames(pending + data_in[:taken])
        if self._frame_buffer:  # not read as a frame: what follows waits behind it
            self._frame_buffer += data_in[taken:]
            return
        self._read_frames(data_in, taken)

    def _read_frames(self, data: bytes, at: int = 0) -> None:
        """Process the whole frames of `data` from `at` on; keep the rest for the next read."""
        view = memoryview(data)
        end = len(data)
        try:
            while at < end:
                if view[at] == _PROTOCOL_HEADER[0]:
                    # The broker's protocol header (it refused our version): pika reads it.
                    rest, at = bytes(view[at:]), end
                    pika.SelectConnection._on_data_available(self, rest)
                    return
                wanted = _frame_length(view[at : at + _HEADER_SIZE])
                if wanted is None or at + wanted > end:
                    break  # cut short: the rest comes with the next read
                frame_type, channel_number, _size = _HEADER.unpack_from(view, at)
                frame_end = at + wanted
                value: Any
                if frame_type == spec.FRAME_BODY and view[frame_end - 1] == spec.FRAME_END:
                    # A view of the read, not a copy: the message's fragments are joined once.
                    value = frame.Body(channel_number, view[at + _HEADER_SIZE : frame_end - 1])
                else:
                    consumed, value = frame.decode_frame(bytes(view[at:frame_end]))
                    if value is None or consumed != wanted:
                        raise pika.exceptions.InvalidFrameError("a frame pika cannot read")
                at = frame_end
                self.bytes_received += wanted
                self._process_frame(value)
        finally:
            if at < end:
                self._frame_buffer = data if at == 0 else bytes(view[at:])


def _frame_length(data: bytes | memoryview) -> int | None:
    """The whole length of the frame `data` starts with; None if its header is not all there
    (or it is the protocol header, not a frame)."""
    if len(data) < _HEADER_SIZE or bytes(data[:4]) == _PROTOCOL_HEADER:
        return None
    return _HEADER_SIZE + int(_HEADER.unpack_from(data)[2]) + 1
