"""The API tokens file (FREIGHT_API_TOKENS_FILE): who may call the API, and as what.

One JSON object per line, `{"name": "alice", "role": "user", "token_sha256": "..."}`. Only a
token's SHA-256 is kept: a token is 32 random bytes, so its hash cannot be guessed back, and a
leaked file lets nobody in. `freight token add` writes it (created 0600); the API reads it.

A user's quota is a line of its own, `{"quota": "alice", "max_gpus": 2, "max_running": 5}`
(null: no bound), written by `freight token quota`; the API announces it in the log
(`OwnerQuotaSet`), where the scheduler reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROLES = ("user", "admin")
TOKEN_PREFIX = "frt_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class TokensFileError(ValueError):
    """The tokens file is missing, unsafe or malformed; the message names the file and line."""


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: str
    token_sha256: str

    def to_json(self) -> str:
        return json.dumps(
            {"name": self.name, "role": self.role, "token_sha256": self.token_sha256},
            separators=(",", ":"),
        )


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode(errors="surrogateescape")).hexdigest()


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise TokensFileError(
            f"user name {name!r}: 1 to 64 letters, digits or . _ @ -, starting with a letter or "
            "digit"
        )
    return name


def match(entries: Iterable[TokenEntry], token: str) -> TokenEntry | None:
    """The entry whose hash is the token's. Every entry is compared, in constant time each, so
    how long this takes says nothing about which hash came close."""
    presented = token_hash(token)
    found = None
    for entry in entries:
        if hmac.compare_digest(entry.token_sha256, presented):
            found = entry
    return found


def read_tokens(path: Path) -> list[TokenEntry]:
    """Raises TokensFileError if the file is missing, writable by others, or malformed."""
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise TokensFileError(f"tokens file {path} cannot be read: {exc.strerror}") from None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        # Whoever can write it can make themselves an admin.
        raise TokensFileError(
            f"tokens file {path} is writable by other users (mode {info.st_mode & 0o777:04o}); "
            f"run `chmod 600 {path}`"
        )
    return parse_tokens(text.splitlines(), str(path))


def parse_tokens(lines: Sequence[str], source: str) -> list[TokenEntry]:
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
            if isinstance(raw, dict) and "quota" in raw:
                continue  # read_quotas' business
            entry = TokenEntry(str(raw["name"]), str(raw["role"]), str(raw["token_sha256"]))
        except (ValueError, KeyError, TypeError):
            raise TokensFileError(
                f"{source} line {number}: expected "
                '{"name": ..., "role": "user" or "admin", "token_sha256": ...}'
            ) from None
        if entry.role not in ROLES:
            raise TokensFileError(f"{source} line {number}: role must be one of {ROLES}")
        if not re.fullmatch(r"[0-9a-f]{64}", entry.token_sha256):
            raise TokensFileError(f"{source} line {number}: token_sha256 is not a SHA-256 hex")
        entries.append(entry)
    return entries


def add_token(path: Path, name: str, role: str) -> str:
    """Append a new token's hash for `name` and return the token, which is shown only once."""
    check_name(name)
    if role not in ROLES:
        raise TokensFileError(f"role must be one of {ROLES}")
    token = new_token()
    _append(path, TokenEntry(name, role, token_hash(token)).to_json() + "\n")
    return token


def revoke_tokens(path: Path, name: str) -> int:
    """Remove every token of `name`; returns how many there were."""
    kept, removed = [], 0
    with _locked(path) as fd:
        for line in _read_fd(fd).splitlines(keepends=True):
            entries = parse_tokens([line], str(path))
            if entries and entries[0].name == name:
                removed += 1
            else:
                kept.append(line)
        if removed:
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, "".join(kept).encode())
    return removed


QUOTA_KEYS = ("max_gpus", "max_running")
Quotas = dict[str, dict[str, int | None]]  # user -> {max_gpus, max_running}


def read_quotas(path: Path) -> Quotas:
    """Each user's quota as the file has it now (the last line for a user wins)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise TokensFileError(f"tokens file {path} cannot be read: {exc.strerror}") from None
    return parse_quotas(lines, str(path))


def parse_quotas(lines: Sequence[str], source: str) -> Quotas:
    quotas: Quotas = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
        except ValueError:
            continue  # parse_tokens says what is wrong with it
        if not isinstance(raw, dict) or "quota" not in raw:
            continue
        quota: dict[str, int | None] = {}
        for key in QUOTA_KEYS:
            value = raw.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise TokensFileError(f"{source} line {number}: {key} must be an integer ≥ 0")
            quota[key] = value
        quotas[check_name(str(raw["quota"]))] = quota
    return quotas


def set_quota(path: Path, name: str, max_gpus: int | None, max_running: int | None) -> None:
    """Replace `name`'s quota line (None: no bound; both None keeps a line that lifts it, so
    the lift is announced even by an API started later)."""
    check_name(name)
    line = json.dumps(
        {"quota": name, "max_gpus": max_gpus, "max_running": max_running},
        separators=(",", ":"),
    )
    with _locked(path) as fd:
        kept = [
            old
            for old in _read_fd(fd).splitlines(keepends=True)
            if name not in parse_quotas([old], str(path))
        ]
        text = "".join(kept)
        if text and not text.endswith("\n"):
            text += "\n"
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, (text + line + "\n").encode())


def _append(path: Path, line: str) -> None:
    with _locked(path) as fd:
        os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, line.encode())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    """The file, created 0600 if new, locked against a concurrent `freight token` command."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()
