"""The runner's tar reader against tarfile itself: every format tarfile writes, in chunks of any
size, read to the same members and bytes; a damaged archive refused as tarfile would."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator

import pytest

from freight_server.services.runner.tar_reader import TarReader

LONG = "d" * 120 + "/" + "f" * 150  # past ustar's 100 bytes of name, and its 155 of prefix


def archive(format: int, pax_headers: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format, pax_headers=pax_headers) as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **more) -> None:
            member = tarfile.TarInfo(name)
            member.type, member.size, member.mode, member.mtime = (
                kind,
                len(data),
                0o640,
                1_700_000_000,
            )
            for key, value in more.items():
                setattr(member, key, value)
            tar.addfile(member, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        add("job", tarfile.DIRTYPE, mode=0o755)
        add("job/empty")
        add("job/small", data=b"hello\n")
        add("job/block", data=b"x" * 512)
        add("job/random.bin", data=os.urandom(300_000))
        add("job/link", tarfile.SYMTYPE, linkname="small")
        add("job/hard", tarfile.LNKTYPE, linkname="job/small")
        add("job/" + "p" * 60 + "/" + "q" * 90, data=b"prefixed")  # ustar's prefix field
        if format != tarfile.USTAR_FORMAT:  # what ustar cannot name
            add("job/" + LONG, data=b"long")
            add("job/long-link", tarfile.SYMTYPE, linkname=LONG)
            add("job/café ☕", data=b"utf-8 name")
    return buffer.getvalue()


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def with_tarfile(data: bytes) -> list[tuple]:
    found = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for member in tar:
            source = tar.extractfile(member) if member.isreg() else None
            found.append(_described(member, source.read() if source else b""))
    return found


def with_reader(chunks: Iterator[bytes]) -> list[tuple]:
    reader = TarReader(chunks)
    return [_described(m, reader.read() if m.isreg() else b"") for m in reader]


def _described(member: tarfile.TarInfo, data: bytes) -> tuple:
    return (member.name, member.type, member.size, member.mode, member.mtime, member.linkname, data)


@pytest.mark.parametrize(
    "format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=str
)
@pytest.mark.parametrize("chunk", [1, 7, 512, 4096, 65_536, 1 << 22])
def test_every_format_in_chunks_of_any_size_reads_as_tarfile_reads_it(format, chunk):
    data = archive(format)
    expected = with_tarfile(data)
    assert len(expected) >= 8
    assert with_reader(pieces(data, chunk)) == expected


def test_a_global_pax_header_applies_to_every_member_after_it():
    data = archive(tarfile.PAX_FORMAT, pax_headers={"mtime": "1234.5", "comment": "x"})
    read = with_reader(pieces(data, 1000))
    assert read == with_tarfile(data)
    assert {member[4] for member in read} == {1234.5}


def test_bytes_left_unread_are_skipped_and_read_in_pieces_as_asked():
    data = archive(tarfile.PAX_FORMAT)
    reader = TarReader(pieces(data, 3000))
    names = []
    for member in reader:
        names.append(member.name)
        if member.name == "job/random.bin":
            first = reader.read(1000)
            assert len(first) == 1000 and len(reader.read(10)) == 10
    assert names == [described[0] for described in with_tarfile(data)]


def test_a_damaged_archive_is_refused():
    data = bytearray(archive(tarfile.PAX_FORMAT))
    cut = data[: 512 * 7 + 1000]  # inside the bytes of job/random.bin
    with pytest.raises(tarfile.ReadError):
        with_reader(iter([bytes(cut)]))
    with pytest.raises(tarfile.ReadError):  # cut there, and its bytes left unread
        list(TarReader(iter([bytes(cut)])))
    data[0] ^= 0xFF  # the first header's checksum no longer matches
    with pytest.raises(tarfile.ReadError):
        with_reader(iter([bytes(data)]))
    with pytest.raises(tarfile.ReadError):
        with_reader(iter([b"not a tar archive at all " * 40]))


def test_an_empty_stream_has_no_members():
    assert with_reader(iter([])) == []
    assert with_reader(iter([bytes(1024)])) == []
