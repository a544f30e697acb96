"""Whole directories both ways: `--file DIR` becomes one upload per file under DEST (the API
takes a path per `file[]` part, so a tree needs no archive and no server change), and
`files get -r` walks a job's directory and downloads each file.

Uploads follow a symlink to a file (the job gets its content) and refuse one to a directory or
to nothing, and any file that is not a regular file or cannot be read: nothing is skipped
silently. An empty directory cannot travel as a file part; it is named in a warning.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from freight.client import Client, Progress
from freight.models import FileEntry


class TransferError(Exception):
    """A local file or directory that cannot be sent or written, in words for the user."""


@dataclass(frozen=True)
class DirectoryUpload:
    """The files of one local directory, each as (local path, destination in the job)."""

    files: list[tuple[str, str]]
    empty_dirs: list[str] = field(default_factory=list)


def directory_upload(local: str, dest: str) -> DirectoryUpload:
    """Every file under `local`, in a stable order, its destination `dest`/relative path."""
    files: list[tuple[str, str]] = []
    empty: list[str] = []

    def refuse(path: str, why: str) -> None:
        raise TransferError(f"{path}: {why}")

    for top, dirs, names in os.walk(local, onerror=lambda exc: refuse(exc.filename, _why(exc))):
        dirs.sort()
        for name in list(dirs):
            path = os.path.join(top, name)
            if os.path.islink(path):
                refuse(path, "a symlink to a directory (not followed); upload it by its own --file")
        if not dirs and not names and top != local:
            empty.append(top)
        for name in sorted(names):
            path = os.path.join(top, name)
            _check_readable(path, refuse)
            relative = Path(os.path.relpath(path, local)).as_posix()
            files.append((path, posixpath.join(dest, relative)))
    if not files:
        refuse(local, "an empty directory: nothing to upload")
    return DirectoryUpload(files, empty)


def _check_readable(path: str, refuse: Callable[[str, str], None]) -> None:
    try:
        info = os.stat(path)  # follows a symlink: the job gets what it points at
    except FileNotFoundError:
        refuse(path, "a symlink to nothing")
        return
    except OSError as exc:
        refuse(path, _why(exc))
        return
    if stat.S_ISDIR(info.st_mode):
        refuse(path, "a symlink to a directory (not followed); upload it by its own --file")
    if not stat.S_ISREG(info.st_mode):
        refuse(path, "not a regular file (a pipe, socket or device)")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        refuse(path, _why(exc))


def _why(exc: OSError) -> str:
    return f"cannot read it ({exc.strerror or exc})"


# -- downloads -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteTree:
    """What `files get -r` found under a job's directory, paths relative to it."""

    files: list[FileEntry]
    dirs: list[str]
    symlinks: list[FileEntry]
    others: list[FileEntry]

    @property
    def size(self) -> int:
        return sum(entry.size or 0 for entry in self.files)


def remote_tree(client: Client, job_id: str, root: str) -> RemoteTree:
    """The job's directory `root`, every level listed (one request per directory)."""
    tree = RemoteTree([], [], [], [])
    pending = [root]
    while pending:
        directory = pending.pop()
        for entry in client.files_ls(job_id, directory):
            if entry.is_dir:
                tree.dirs.append(entry.path)
                pending.append(entry.path)
            elif entry.type == "file":
                tree.files.append(entry)
            elif entry.type == "symlink":
                tree.symlinks.append(entry)
            else:
                tree.others.append(entry)
    return tree


def download_tree(
    client: Client,
    job_id: str,
    root: str,
    tree: RemoteTree,
    local: Path,
    on_download: Progress | None = None,
) -> Iterator[Path]:
    """Recreates `tree` (listed from the job's `root`) under `local`, yielding each file saved.
    Symlinks are made as symlinks, pointing where they pointed in the job."""
    local.mkdir(exist_ok=True)
    for directory in tree.dirs:
        _local_path(local, root, directory).mkdir(parents=True, exist_ok=True)
    done = 0
    for entry in tree.files:
        target = _local_path(local, root, entry.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        before = done

        def show(sofar: int, _total: int | None, before: int = before) -> None:
            if on_download:
                on_download(before + sofar, tree.size)

        done += client.files_get(job_id, entry.path, target, on_download=show)
        yield target
    for link in tree.symlinks:
        target = _local_path(local, root, link.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        os.symlink(link.target or "", target)


def _local_path(local: Path, root: str, remote: str) -> Path:
    """Where a job's path lands here; a path that would climb out of `local` is refused."""
    relative = posixpath.relpath(remote, root)
    if relative.startswith("..") or posixpath.isabs(relative):
        raise TransferError(f"{remote} is not under {root}")
    return local.joinpath(*relative.split("/"))
