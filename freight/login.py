"""`freight login`: ask for a token, check it against the API, keep it in the config file
(freight/credentials.py) so that later commands need neither FREIGHT_URL nor FREIGHT_TOKEN."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from freight.client import DEFAULT_URL, Client
from freight.credentials import Credentials, config_path, write_config
from freight.errors import FreightError, Unauthorized


class TokenRefused(Exception):
    """The token is empty, or the API would not take it (the message says which)."""


def add_login_command(commands: Any, common: argparse.ArgumentParser) -> None:
    login = commands.add_parser(
        "login",
        help="check a token against the API and keep it (and the URL) in your config file",
        description="ask for a token, check it against the API (--url, else FREIGHT_URL, else "
        "the config file's, else the local one) and save both to the config file, mode 0600",
        parents=[common],
    )
    login.add_argument(
        "--token-stdin", action="store_true", help="read the token from stdin, not a prompt"
    )


def login(args: argparse.Namespace) -> int:
    token = _read_token(args.token_stdin)
    url = Credentials(args.url, token).url or DEFAULT_URL
    with Client(url, token) as client:
        try:
            next(client.list("all", page_size=1), None)
        except Unauthorized as exc:
            raise TokenRefused(f"{client.url} refused the token: {exc.message}") from None
        url = client.url
    path = config_path()
    try:
        write_config(path, {"url": url, "token": token})
    except OSError as exc:
        raise FreightError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"logged in to {url}; saved the URL and token to {path} (mode 0600)", file=sys.stderr)
    return 0


def _read_token(from_stdin: bool) -> str:
    token = sys.stdin.readline() if from_stdin else getpass.getpass("Freight token: ")
    token = token.strip()
    if not token:
        raise TokenRefused("no token given")
    return token
