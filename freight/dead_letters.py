"""`freight dead-letters ls|replay`: the events a service set aside, for operators.

Run where the services' databases are reachable, with the same FREIGHT_* database settings.
`replay` only marks rows: the running service retries each between batches, then deletes it or
records its new error, and `ls` shows the outcome (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from freight_server.shared.config import ConfigError, Settings
from freight_server.shared.db import create_engine
from freight_server.shared.dead_letters import DeadLetter, list_dead_letters, request_replay
from freight_server.shared.events import utcnow

SERVICES = ("api", "scheduler", "runner", "filestore")
ERROR_WIDTH = 80

# An operator's command runs no job, so it keeps the usual codes (not the CLI's 251-255).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _NotMigrated(Exception):
    """A service's database predates dead-letter replays."""


def run_dead_letter_command(args: argparse.Namespace, settings: Settings | None = None) -> int:
    try:
        settings = settings or Settings.from_env()
        if args.action == "ls":
            return _list(settings, args.service, args.json)
        return _replay(settings, args.service, args.ids, args.all, args.json)
    except (ConfigError, _NotMigrated) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except sa.exc.SQLAlchemyError as exc:
        _error(f"database error: {exc}")
        return EXIT_FAILED


def _list(settings: Settings, service: str | None, as_json: bool) -> int:
    letters = [
        (name, letter)
        for name, connection, table in _tables(settings, service)
        for letter in list_dead_letters(connection, table)
    ]
    if as_json:
        rows = [{"service": name, **asdict(letter)} for name, letter in letters]
        print(json.dumps(rows, default=str))
        return EXIT_OK
    if not letters:
        print("no dead letters", file=sys.stderr)
    for name, letter in letters:
        print(_line(name, letter))
    return EXIT_OK


def _line(service: str, letter: DeadLetter) -> str:
    error = letter.error if len(letter.error) <= ERROR_WIDTH else letter.error[:ERROR_WIDTH] + "…"
    replay = "replay requested" if letter.replay_requested_at else ""
    return "\t".join(
        [
            str(letter.id),
            service,
            f"offset {letter.position}",
            letter.recorded_at.isoformat(timespec="seconds"),
            letter.event_type or "(not an event)",
            letter.job_id or "-",
            error,
            replay,
        ]
    ).rstrip()


def _replay(
    settings: Settings, service: str | None, ids: list[int], every: bool, as_json: bool
) -> int:
    if bool(ids) == every:
        _error("name the dead letters to replay (IDs, as `ls` shows them) or pass --all")
        return EXIT_USAGE
    if ids and service is None:
        _error("IDs are numbered per service: pass --service too")
        return EXIT_USAGE
    marked: dict[str, list[int]] = {}
    for name, connection, table in _tables(settings, service):
        marked[name] = request_replay(connection, table, ids or None, utcnow())
        connection.commit()
    missing = sorted(set(ids) - {i for letter_ids in marked.values() for i in letter_ids})
    if as_json:
        print(json.dumps(marked))
    else:
        _tell_marked(marked)
    if missing:
        _error(f"no dead letter {', '.join(map(str, missing))} in {service}")
        return EXIT_FAILED
    return EXIT_OK


def _tell_marked(marked: dict[str, list[int]]) -> None:
    for name, letter_ids in marked.items():
        if letter_ids:
            print(f"{name}: asked to replay {', '.join(map(str, letter_ids))}")
    if any(marked.values()):
        print(
            "the running services retry them within seconds; "
            "`freight dead-letters ls` shows the ones that failed again",
            file=sys.stderr,
        )
    else:
        print("no dead letters to replay", file=sys.stderr)


def _tables(settings: Settings, only: str | None) -> Iterator[tuple[str, sa.Connection, sa.Table]]:
    """Each service's dead letters table, where its database exists (never creating one)."""
    for service in [only] if only else SERVICES:
        url = settings.database_url_for(service)
        if not _exists(url):
            continue
        table: sa.Table = importlib.import_module(
            f"freight_server.services.{service}.schema"
        ).dead_letters
        with _connected(url) as connection:
            if not sa.inspect(connection).has_table(table.name):
                continue
            columns = {c["name"] for c in sa.inspect(connection).get_columns(table.name)}
            if "replay_requested_at" not in columns:
                raise _NotMigrated(f"{service}: its database needs `freight migrate {service}`")
            yield service, connection, table


def _exists(url: str) -> bool:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    return bool(parsed.database) and Path(str(parsed.database)).exists()


@contextmanager
def _connected(url: str) -> Iterator[sa.Connection]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _error(message: str) -> None:
    print(f"freight dead-letters: {message}", file=sys.stderr, flush=True)
