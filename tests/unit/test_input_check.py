"""An input is checked against its digest and size as it goes into the container, a large one
hashed on a thread of its own while the engine takes each chunk."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from freight_server.services.runner.files import FileLimits, _checked
from freight_server.shared.rpc import CHUNK_BYTES, TransferError

LIMITS = FileLimits(input_deadline=60, output_deadline=60, max_output_bytes=1, max_output_files=1)


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def chunks(data: bytes) -> list[bytes]:
    return [data[at : at + CHUNK_BYTES] for at in range(0, len(data), CHUNK_BYTES)] or [b""]


@pytest.mark.parametrize("size", [0, 10, CHUNK_BYTES, 3 * CHUNK_BYTES + 5])
def test_the_bytes_go_through_unchanged_when_they_match(size):
    data = os.urandom(size)
    deadline = time.monotonic() + 60
    assert b"".join(_checked(chunks(data), digest_of(data), size, deadline, LIMITS)) == data


@pytest.mark.parametrize("size", [10, 3 * CHUNK_BYTES + 5])
def test_bytes_that_do_not_match_fail_before_the_archive_is_closed(size):
    data = os.urandom(size)
    sent = chunks(data)
    sent[-1] = bytes([sent[-1][0] ^ 1]) + sent[-1][1:]
    deadline = time.monotonic() + 60
    passed = []
    with pytest.raises(TransferError, match="do not match"):
        for chunk in _checked(sent, digest_of(data), size, deadline, LIMITS):
            passed.append(chunk)
    assert len(passed) == len(sent)  # every chunk went on; the end of the archive did not


def test_a_short_input_fails():
    data = os.urandom(2 * CHUNK_BYTES)
    deadline = time.monotonic() + 60
    with pytest.raises(TransferError):
        list(_checked(chunks(data)[:1], digest_of(data), len(data), deadline, LIMITS))


def test_a_reader_that_stops_early_leaves_nothing_running():
    data = os.urandom(3 * CHUNK_BYTES)
    checked = _checked(chunks(data), digest_of(data), len(data), time.monotonic() + 60, LIMITS)
    next(checked)
    checked.close()  # the hashing thread is joined, not left behind
