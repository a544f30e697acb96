"""Paths in a job's file system: where an uploaded file lands, and which paths may be asked for.

Pure rules, shared by the API (which refuses bad names with a 400) and the runner.
"""

from __future__ import annotations

import posixpath

MAX_PATH_BYTES = 4096
# Where the runner keeps what is not a file of the job's own: its stdout and stderr.
OUTPUT_DIR = "/.freight"
STDOUT_PATH = f"{OUTPUT_DIR}/stdout"
STDERR_PATH = f"{OUTPUT_DIR}/stderr"
# Kernel file systems mounted over the container's: what is put there is never seen.
RESERVED = (OUTPUT_DIR, "/proc", "/sys", "/dev")
_BENEATH_RESERVED = tuple(root + "/" for root in RESERVED)


class InvalidPath(ValueError):
    pass


def input_destination(name: str, workdir: str) -> str:
    """An uploaded file's destination: its name if absolute, else under the job's workdir."""
    _check_name(name)
    if name.endswith("/"):
        raise InvalidPath("ends with '/': it names a directory, not a file")
    destination = _normalize(posixpath.join(workdir, name))
    if destination == "/":
        raise InvalidPath("names the root directory, not a file")
    if len(destination.encode()) > MAX_PATH_BYTES:
        raise InvalidPath(f"its destination {destination[:80]}... is over {MAX_PATH_BYTES} bytes")
    if is_reserved(destination):
        raise InvalidPath(f"is inside {reserved_root(destination)}, which jobs cannot be given")
    return destination


def requested_path(path: str | None) -> str:
    """A path asked for in a job's file system: absolute, normalized, never above the root."""
    if path is None or path == "":
        raise InvalidPath("is required: an absolute path such as /job/out.txt")
    _check_name(path)
    if not path.startswith("/"):
        raise InvalidPath(f"must be absolute, such as /job/{path}")
    return _normalize(path)


def is_reserved(path: str) -> bool:
    # Asked of every path a job saved: one call each, no generator.
    return path in RESERVED or path.startswith(_BENEATH_RESERVED)


def reserved_root(path: str) -> str | None:
    return next((r for r in RESERVED if path == r or path.startswith(r + "/")), None)


def parent_of(path: str) -> str:
    return posixpath.dirname(path) or "/"


def _normalize(path: str) -> str:
    # normpath keeps a leading "//" (POSIX leaves its meaning open); a container has none.
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("/") else normal


def _check_name(name: str) -> None:
    if not name:
        raise InvalidPath("has an empty name")
    if "\x00" in name:
        raise InvalidPath("contains a NUL byte")
    if len(name.encode(errors="surrogateescape")) > MAX_PATH_BYTES:
        raise InvalidPath(f"is longer than {MAX_PATH_BYTES} bytes")
    if ".." in name.split("/"):
        raise InvalidPath("has a '..' component")
