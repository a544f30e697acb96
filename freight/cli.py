"""The `freight` command: submit and watch jobs (`submit`, `ls`, `logs`, `wait`...), and run
the services themselves (`serve`, `migrate`, `up`). Exit codes are listed in docs/client.md."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from typing import Any

from freight import completion
from freight.commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    FreightArgumentParser,
    UsageError,
    add_user_commands,
)
from freight.errors import ConnectionFailed, FreightError, Unavailable
from freight.job_ids import (
    PAGE_SIZE,
    AmbiguousJobId,
    UnknownJobId,
    is_full_id,
    prefix_of,
    resolve_job_id,
)
from freight.login import TokenRefused, add_login_command, login
from freight.tokens import add_token_commands, run_token_command

SERVICES = ("api", "scheduler", "runner", "filestore")
SERVICE_COMMANDS = ("serve", "migrate", "up")
# What `pip install 'freight[server]'` adds, and freight_server needs (pyproject.toml's extra).
SERVER_PACKAGES = (
    "falcon",
    "gunicorn",
    "sqlalchemy",
    "alembic",
    "docker",
    "pynvml",
    "psycopg",
    "prometheus_client",
    "cryptography",
)
# The services' own commands run no job, so they keep the usual codes.
SERVICE_EXIT_FAILED = 1
SERVICE_EXIT_USAGE = 2
# What `wait` and `logs -f` say on Ctrl-C to get back to the job.
REATTACH = {
    "logs": "freight logs -f {id}",
    "submit": "freight wait {id}",
    "wait": "freight wait {id}",
}


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS, so that an option given before the subcommand is not reset by it:
    # `freight --json ls` and `freight ls --json`, `freight --url U ls` and `freight ls --url U`.
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    common.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="the Freight API (default: $FREIGHT_URL, else the config file's, else "
        "http://127.0.0.1:5000)",
    )
    parser = FreightArgumentParser(prog="freight", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"freight {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_user_commands(commands, common)
    add_login_command(commands, common)
    _add_service_commands(commands)
    add_token_commands(commands, common)
    add_dead_letter_commands(commands, common)
    shells = commands.add_parser("completion", help="print a shell completion script")
    shells.add_argument("shell", choices=completion.SHELLS)
    return parser


def add_dead_letter_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser(
        "dead-letters", help="events a service could not apply (run where its database is)"
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", parents=[common], help="list the dead letters")
    ls.add_argument("--service", choices=SERVICES, help="one service (default: every one)")
    replay = actions.add_parser(
        "replay", parents=[common], help="ask the running service to retry them (after a fix)"
    )
    replay.add_argument("--service", choices=SERVICES, help="one service (default: every one)")
    replay.add_argument("ids", nargs="*", type=int, metavar="ID", help="as `ls` shows them")
    replay.add_argument("--all", action="store_true", help="every dead letter")


def _version() -> str:
    try:
        return importlib.metadata.version("freight")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_service_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICES)

    migrate = commands.add_parser("migrate", help="bring the services' databases up to date")
    migrate.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"one of {', '.join(SERVICES)} (default: all)",
    )

    up = commands.add_parser("up", help="run every service locally, their output interleaved")
    up.add_argument("--only", nargs="*", choices=SERVICES, default=list(SERVICES))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.url = getattr(args, "url", None)
    if args.command == "completion":
        sys.stdout.write(completion.script(parser, args.shell))
        return 0
    if args.command in SERVICE_COMMANDS:
        return _needs_server(args.command, lambda: run_service_command(args))
    args.json = getattr(args, "json", False)
    if args.command == "token":
        return run_token_command(args)
    if args.command == "dead-letters":
        return _needs_server(args.command, lambda: _run_dead_letter_command(args))
    return run_user_command(args)


def _needs_server(command: str, run: Callable[[], int]) -> int:
    """The operators' commands use the services' packages, which `pip install freight` (the
    client) leaves out: say how to get them rather than show a traceback."""
    try:
        return run()
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in SERVER_PACKAGES:
            raise
        _error(
            f"`freight {command}` needs the server's packages ({exc.name} is missing): "
            "pip install 'freight[server]'"
        )
        return SERVICE_EXIT_USAGE


def _run_dead_letter_command(args: argparse.Namespace) -> int:
    from freight.dead_letters import run_dead_letter_command

    return run_dead_letter_command(args)


def run_user_command(args: argparse.Namespace) -> int:
    try:
        return _run_user_command(args)
    except (UsageError, AmbiguousJobId, TokenRefused) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except UnknownJobId as exc:
        _error(str(exc))
        return EXIT_FAILED
    except (ConnectionFailed, Unavailable) as exc:
        _error(exc.message)
        return EXIT_UNREACHABLE
    except FreightError as exc:
        _error(exc.message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        job_id = getattr(args, "job_id", None)
        if args.command in REATTACH and job_id:
            again = REATTACH[args.command].format(id=job_id)
            _error(
                f"stopped; job {job_id} goes on: `{again}` gets back to it, "
                f"`freight cancel {job_id}` stops it"
            )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`freight logs ID | head`): stop quietly, as `cat` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _run_user_command(args: argparse.Namespace) -> int:
    from freight.client import Client

    if args.command == "login":
        return login(args)
    with Client(args.url) as client:
        job_id = getattr(args, "job_id", None)
        if job_id and not is_full_id(job_id):
            found = client.list("all", page_size=PAGE_SIZE, id_prefix=prefix_of(job_id))
            args.job_id = resolve_job_id(job_id, found)
        return int(args.run(client, args))


def run_service_command(args: argparse.Namespace) -> int:
    from freight_server.shared.config import ConfigError, Settings
    from freight_server.shared.runtime import configure_logging

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"freight: {exc}", file=sys.stderr)
        return SERVICE_EXIT_USAGE

    if args.command == "serve":
        configure_logging(args.service, settings.log_level)
        from freight_server.shared.snapshots import LogUnusable

        module = importlib.import_module(f"freight_server.services.{args.service}.main")
        try:
            module.serve(settings)
        except ConfigError as exc:  # a setting it cannot start with, e.g. an unsafe bind
            print(f"freight serve {args.service}: {exc}", file=sys.stderr)
            return SERVICE_EXIT_USAGE
        except LogUnusable as exc:  # its database is ahead of the stream, or the stream cut
            print(f"freight serve {args.service}: {exc}", file=sys.stderr)
            return SERVICE_EXIT_FAILED
        return 0
    if args.command == "migrate":
        from freight_server.shared.db import create_engine
        from freight_server.shared.db import migrate as run_migrate

        unknown = sorted(set(args.services) - set(SERVICES))
        if unknown:
            print(f"freight migrate: unknown service {unknown[0]!r}", file=sys.stderr)
            return SERVICE_EXIT_USAGE
        for service in args.services or SERVICES:
            run_migrate(create_engine(settings.database_url_for(service)), service)
            print(f"{service}: schema up to date")
        return 0
    from freight.supervisor import run_services

    return run_services(args.only)


def _error(message: str) -> None:
    print(f"freight: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
