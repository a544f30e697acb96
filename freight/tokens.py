"""`freight token add|list|revoke|quota`: manage FREIGHT_API_TOKENS_FILE on the API's host.

`add` prints the new token once, on stdout alone (so `TOKEN=$(freight token add alice)` works),
and keeps only its hash. The API rereads the file within a second: no restart is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from freight_server.shared.tokens import (
    TokensFileError,
    add_token,
    read_tokens,
    revoke_tokens,
    set_quota,
)


def add_token_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    token = commands.add_parser("token", help="manage the API's tokens (on the API's host)")
    token.add_argument(
        "--file",
        type=Path,
        help="the tokens file (default: $FREIGHT_API_TOKENS_FILE)",
    )
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", parents=[common], help="create a token for NAME and print it, once"
    )
    add.add_argument("name", metavar="NAME", help="the user the token acts as")
    add.add_argument("--admin", action="store_true", help="may see and cancel every user's jobs")
    actions.add_parser(
        "list", parents=[common], help="who has tokens, and their roles (never the tokens)"
    )
    revoke = actions.add_parser("revoke", help="remove every token of NAME")
    revoke.add_argument("name", metavar="NAME")
    quota = actions.add_parser(
        "quota", help="set NAME's quota (an option left out: no bound); the API tells the log"
    )
    quota.add_argument("name", metavar="NAME")
    quota.add_argument("--max-gpus", type=int, metavar="N", help="GPUs NAME's jobs hold at once")
    quota.add_argument("--max-running", type=int, metavar="N", help="NAME's jobs running at once")


def run_token_command(args: argparse.Namespace) -> int:
    path = args.file or _path_from_env()
    if path is None:
        _error("set FREIGHT_API_TOKENS_FILE (as the API has it) or pass --file PATH")
        return 2
    try:
        if args.action == "add":
            return _add(path, args.name, "admin" if args.admin else "user", args.json)
        if args.action == "list":
            return _list(path, args.json)
        if args.action == "quota":
            return _quota(path, args.name, args.max_gpus, args.max_running)
        removed = revoke_tokens(path, args.name)
    except TokensFileError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:
        _error(f"{path}: {exc.strerror}")
        return 1
    if not removed:
        _error(f"{args.name} has no token in {path}")
        return 1
    print(f"revoked {removed} token(s) of {args.name}", file=sys.stderr)
    return 0


def _add(path: Path, name: str, role: str, as_json: bool) -> int:
    token = add_token(path, name, role)
    if as_json:
        print(json.dumps({"name": name, "role": role, "token": token, "file": str(path)}))
    else:
        print(token)
        print(
            f"a {role} token for {name} was added to {path}; it is shown only this once. "
            "Clients send it as FREIGHT_TOKEN.",
            file=sys.stderr,
        )
    return 0


def _quota(path: Path, name: str, max_gpus: int | None, max_running: int | None) -> int:
    if any(bound is not None and bound < 0 for bound in (max_gpus, max_running)):
        _error("a quota is a number ≥ 0")
        return 2
    set_quota(path, name, max_gpus, max_running)
    shown = ", ".join(
        f"{key}={'none' if value is None else value}"
        for key, value in (("max_gpus", max_gpus), ("max_running", max_running))
    )
    print(
        f"{name}'s quota is now {shown}; the API tells the scheduler within seconds",
        file=sys.stderr,
    )
    return 0


def _list(path: Path, as_json: bool) -> int:
    entries = read_tokens(path)
    if as_json:
        print(json.dumps([{"name": e.name, "role": e.role} for e in entries]))
        return 0
    for entry in entries:
        print(f"{entry.name}\t{entry.role}")
    return 0


def _path_from_env() -> Path | None:
    raw = os.environ.get("FREIGHT_API_TOKENS_FILE", "").strip()
    return Path(raw).expanduser() if raw else None


def _error(message: str) -> None:
    print(f"freight token: {message}", file=sys.stderr, flush=True)
