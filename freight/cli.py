"""The `freight` command: submit and watch jobs (`submit`, `ls`, `logs`, `wait`...), and run
the services themselves (`serve`, `migrate`, `up`). Exit codes are listed in docs/client.md."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from freight.commands import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UsageError,
    add_user_commands,
)
from freight.dead_letters import add_dead_letter_commands, run_dead_letter_command
from freight.errors import ConnectionFailed, FreightError, Unavailable
from freight.tokens import add_token_commands, run_token_command

SERVICES = ("api", "scheduler", "runner", "filestore")
SERVICE_COMMANDS = ("serve", "migrate", "up")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # so that `freight --json ls` is not reset by the subcommand
        help="print JSON for scripts",
    )
    parser = argparse.ArgumentParser(prog="freight", description=__doc__, parents=[common])
    parser.add_argument(
        "--url", help="the Freight API (default: $FREIGHT_URL, else http://127.0.0.1:5000)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_user_commands(commands, common)
    _add_service_commands(commands)
    add_token_commands(commands, common)
    add_dead_letter_commands(commands, common)
    return parser


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
    if args.command in SERVICE_COMMANDS:
        return run_service_command(args)
    args.json = getattr(args, "json", False)
    if args.command == "token":
        return run_token_command(args)
    if args.command == "dead-letters":
        return run_dead_letter_command(args)
    return run_user_command(args)


def run_user_command(args: argparse.Namespace) -> int:
    from freight.client import Client

    try:
        with Client(args.url) as client:
            return int(args.run(client, args))
    except UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except (ConnectionFailed, Unavailable) as exc:
        _error(exc.message)
        return EXIT_UNREACHABLE
    except FreightError as exc:
        _error(exc.message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        job_id = getattr(args, "job_id", None)
        if args.command in ("wait", "logs") and job_id:
            _error(f"stopped; job {job_id} goes on (`freight cancel {job_id}` stops it)")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`freight logs ID | head`): stop quietly, as `cat` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def run_service_command(args: argparse.Namespace) -> int:
    from shared.config import ConfigError, Settings
    from shared.runtime import configure_logging

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"freight: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.command == "serve":
        configure_logging(args.service, settings.log_level)
        from shared.snapshots import LogUnusable

        module = importlib.import_module(f"services.{args.service}.main")
        try:
            module.serve(settings)
        except ConfigError as exc:  # a setting it cannot start with, e.g. an unsafe bind
            print(f"freight serve {args.service}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except LogUnusable as exc:  # its database is ahead of the stream, or the stream cut
            print(f"freight serve {args.service}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return 0
    if args.command == "migrate":
        from shared.db import create_engine
        from shared.db import migrate as run_migrate

        unknown = sorted(set(args.services) - set(SERVICES))
        if unknown:
            print(f"freight migrate: unknown service {unknown[0]!r}", file=sys.stderr)
            return 2
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
