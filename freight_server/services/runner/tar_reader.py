"""A tar stream read member by member, each member's bytes read in turn.

An engine's archive of a job's outputs may hold tens of thousands of small files, and tarfile's
streaming mode spent ≈ 60 µs of CPU on each: two checksums of every header, 10 KiB reads that
each copied what was left of its buffer, a file object a member. This reads what the engines'
archives hold (Go's archive/tar, and Python's tarfile for the local executor): ustar names with
their prefix, PAX extended headers (path, linkpath, size, mtime; global ones too), GNU long names
and base-256 numbers. Members come as tarfile.TarInfo, so what reads them needs no type of its
own; a malformed stream raises tarfile.ReadError, as tarfile would.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_CHECKSUM_AS_SPACES = 8 * ord(" ")
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
_KNOWN_TYPES = frozenset(tarfile.SUPPORTED_TYPES)


class TarReader:
    """`for member in reader:` each member in order; `reader.read()` its bytes while it is the
    current one (whatever is not read is skipped before the next)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._chunk = b""
        self._at = 0  # where unread bytes begin in _chunk
        self._left = 0  # the current member's bytes not read yet
        self._padding = 0  # then this many, to the end of its last block

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        shared: dict[str, str] = {}  # a global PAX header's records, for every member after it
        while True:
            self._skip(self._left + self._padding)
            self._left = self._padding = 0
            member = self._next(shared)
            if member is None:
                return
            # As tarfile: only a regular file's bytes (or an unknown type's) follow its header.
            data = member.size if member.isreg() or member.type not in _KNOWN_TYPES else 0
            self._left, self._padding = data, -data % BLOCK
            yield member

    def read(self, size: int = -1) -> bytes:
        """Up to `size` (all, if negative) of the current member's bytes not read yet."""
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._take(wanted)
        if len(data) < wanted:
            raise tarfile.ReadError("the archive ends inside a member's bytes")
        self._left -= wanted
        return data

    # -- headers -------------------------------------------------------------------------------

    def _next(self, shared: dict[str, str]) -> tarfile.TarInfo | None:
        """The next member, its extended headers applied; None at the end of the archive."""
        records = dict(shared)
        long_name = long_link = None
        while True:
            header = self._take(BLOCK)
            if header == _ZERO_BLOCK or not header:
                return None
            if len(header) < BLOCK:
                raise tarfile.ReadError("the archive ends inside a header")
            _check(header)
            kind = header[156:157] or tarfile.REGTYPE
            size = _number(header[124:136])
            if kind not in _EXTENDED:
                break
            data = self._take(size + -size % BLOCK)[:size]
            if len(data) < size:
                raise tarfile.ReadError("the archive ends inside an extended header")
            if kind == tarfile.XHDTYPE:
                records.update(_pax_records(data))
            elif kind == tarfile.XGLTYPE:
                shared.update(_pax_records(data))
                records.update(shared)
            elif kind == tarfile.GNUTYPE_LONGNAME:
                long_name = _text(data)
            else:
                long_link = _text(data)
        name = long_name or _text(header[0:100])
        prefix = _text(header[345:500]) if header[257:263] == b"ustar\0" else ""  # not GNU's
        if prefix and long_name is None:
            name = f"{prefix}/{name}"
        if kind == tarfile.AREGTYPE and name.endswith("/"):
            kind = tarfile.DIRTYPE  # an old tar's directory
        member = tarfile.TarInfo(records.get("path", name))
        member.type = tarfile.REGTYPE if kind == tarfile.AREGTYPE else kind
        member.mode = _number(header[100:108])
        try:
            member.size = int(records.get("size", size))
            member.mtime = float(records.get("mtime") or _number(header[136:148]))
        except ValueError:
            raise tarfile.ReadError("a PAX record's size or mtime is not a number") from None
        member.linkname = records.get("linkpath", long_link or _text(header[157:257]))
        if member.isdir():
            member.name = member.name.rstrip("/")
        return member

    # -- bytes ---------------------------------------------------------------------------------

    def _take(self, size: int) -> bytes:
        """The next `size` bytes of the stream (fewer only where it ends)."""
        end = self._at + size
        if end <= len(self._chunk):
            data = self._chunk[self._at : end]
            self._at = end
            return data
        parts = [self._chunk[self._at :]]
        wanted = size - len(parts[0])
        self._chunk, self._at = b"", 0
        while wanted > 0:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            if len(chunk) > wanted:
                parts.append(chunk[:wanted])
                self._chunk, self._at = chunk, wanted
                break
            parts.append(chunk)
            wanted -= len(chunk)
        return b"".join(parts)

    def _skip(self, size: int) -> None:
        while size > 0:
            skipped = len(self._take(min(size, 1 << 20)))
            if not skipped:
                raise tarfile.ReadError("the archive ends inside a member's bytes")
            size -= skipped


def _check(header: bytes) -> None:
    """The header's checksum: the sum of its bytes, its own field counted as spaces."""
    try:
        stored = int(_text(header[148:156]).strip() or "0", 8)
    except ValueError:
        raise tarfile.ReadError("a header's checksum is not a number") from None
    computed = sum(header) - sum(header[148:156]) + _CHECKSUM_AS_SPACES
    if stored != computed and stored != _signed_sum(header):
        raise tarfile.ReadError("a header's checksum does not match: not a tar archive?")


def _signed_sum(header: bytes) -> int:
    """The checksum as some old tars computed it, each byte signed."""
    return sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) + (
        _CHECKSUM_AS_SPACES
    )


def _number(field: bytes) -> int:
    """An octal number, or a base-256 one (GNU's, for what octal cannot hold)."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - (256 ** (len(field) - 1)) if field[0] == 0o377 else value
    try:
        return int(_text(field).strip() or "0", 8)
    except ValueError:
        raise tarfile.ReadError(f"{field!r} is not a number") from None


def _text(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """`<length> <key>=<value>\\n` records."""
    records, at = {}, 0
    while at < len(data) and data[at] != 0:
        space = data.find(b" ", at)
        try:
            length = int(data[at:space])
        except ValueError:
            raise tarfile.ReadError("a PAX record's length is not a number") from None
        if space < 0 or length <= space - at or at + length > len(data):
            raise tarfile.ReadError("a malformed PAX record")
        if data[at + length - 1] != ord("\n"):
            raise tarfile.ReadError("a PAX record does not end its line")
        key, _, value = data[space + 1 : at + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        at += length
    return records
