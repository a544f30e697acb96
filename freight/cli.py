"""The `freight` command."""

from __future__ import annotations

import argparse
import importlib
import sys

from shared.config import ConfigError, Settings
from shared.runtime import configure_logging

SERVICES = ("api", "scheduler", "runner", "filestore")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freight", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICES)

    migrate = commands.add_parser("migrate", help="bring the services' databases up to date")
    migrate.add_argument("services", nargs="*", choices=SERVICES, default=list(SERVICES))

    up = commands.add_parser("up", help="run every service locally, their output interleaved")
    up.add_argument("--only", nargs="*", choices=SERVICES, default=list(SERVICES))

    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"freight: {exc}", file=sys.stderr)
        return 2

    if args.command == "serve":
        configure_logging(args.service, settings.log_level)
        module = importlib.import_module(f"services.{args.service}.main")
        module.serve(settings)
        return 0
    if args.command == "migrate":
        from shared.db import create_engine
        from shared.db import migrate as run_migrate

        for service in args.services:
            run_migrate(create_engine(settings.database_url_for(service)), service)
            print(f"{service}: schema up to date")
        return 0
    if args.command == "up":
        from freight.supervisor import run_services

        return run_services(args.only)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
