"""Who is calling: `Authorization: Bearer <token>` resolved against FREIGHT_API_TOKENS_FILE; or
HTTP Basic with the token as the password (`Basic base64(user:token)`), for clients such as TES's
that know no other scheme. A Basic user name, if given, must be the token's.

Every route needs a token but the liveness and readiness checks. A request without a valid one
is answered 401 with the same body whether its token was missing, malformed or unknown. Without
a tokens file Freight is in local mode: every caller is an anonymous admin, which is why the API
then refuses any address but loopback (`check_exposure`, run before it binds).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import falcon

from freight_server.services.api.errors import ApiError
from freight_server.shared.config import ConfigError, Settings
from freight_server.shared.tokens import TokenEntry, TokensFileError, match, read_tokens

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"  # the owner of jobs submitted in local mode (and before owners existed)
PUBLIC_ROUTES = frozenset({"/healthz", "/readyz"})  # probes carry no token
PUBLIC_PAGES = ("/ui", "/docs")  # the pages and their assets; the data behind them is not
RELOAD_EVERY = 1.0  # seconds between looks at the tokens file for `freight token` changes


@dataclass(frozen=True)
class Caller:
    name: str
    role: str  # "user" or "admin"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner: str) -> bool:
        """A user sees their own jobs; an admin sees every job."""
        return self.is_admin or owner == self.name


LOCAL_ADMIN = Caller(ANONYMOUS, "admin")


class TokenBook:
    """The tokens file, read again when it changes (`freight token add` while the API runs)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._entries = read_tokens(path)  # a bad file stops the API from starting
        self._signature = self._stat()
        self._checked_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, token: str) -> TokenEntry | None:
        return match(self._current(), token)

    def _current(self) -> list[TokenEntry]:
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= RELOAD_EVERY:
                self._checked_at = now
                self._reload_if_changed()
            return self._entries

    def _reload_if_changed(self) -> None:
        signature = self._stat()
        if signature == self._signature:
            return
        try:
            self._entries = read_tokens(self.path)
        except TokensFileError as exc:
            # Keep serving with the tokens that were valid; an edit half-way is not an outage.
            log.warning("kept the previous tokens: %s", exc)
            return
        self._signature = signature
        log.info("tokens file %s reloaded: %d tokens", self.path, len(self._entries))

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_ino, info.st_size, info.st_mtime_ns


def token_book(settings: Settings) -> TokenBook | None:
    """The tokens in force, or None in local mode; raises ConfigError for a bad tokens file."""
    if settings.api_tokens_file is None:
        return None
    try:
        return TokenBook(settings.api_tokens_file)
    except TokensFileError as exc:
        raise ConfigError(f"FREIGHT_API_TOKENS_FILE: {exc}") from None


def unauthorized() -> ApiError:
    # One answer for every failure: which part was wrong is nothing a caller needs to know.
    return ApiError(
        falcon.HTTP_401,
        "unauthorized",
        "this request needs a valid API token: send the header `Authorization: Bearer <token>` "
        "(or HTTP Basic auth with the token as the password)",
        # Bearer only: a Basic challenge would make a browser (the dashboard) ask for a password.
        headers={"WWW-Authenticate": 'Bearer realm="freight"'},
    )


class Authentication:
    """falcon middleware: puts the Caller in `req.context.caller`, or answers 401."""

    def __init__(self, tokens: TokenBook | None):
        self._tokens = tokens

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if self._tokens is None:
            req.context.caller = LOCAL_ADMIN
            return
        if is_public(req.path) and req.method in ("GET", "HEAD"):
            req.context.caller = None
            return
        header = req.get_header("Authorization")
        token, user = bearer_token(header), None
        if token is None and (basic := basic_credentials(header)) is not None:
            user, token = basic
        entry = self._tokens.find(token) if token else None
        if entry is not None and user and user != entry.name:
            entry = None  # a Basic user name that is not the token's: the pair is wrong
        if entry is None:
            # The operator's log may say which; never the token itself.
            log.info(
                "refused %s %s from %s: %s token",
                req.method,
                req.path,
                req.remote_addr,
                "no" if token is None else "an unknown",
            )
            raise unauthorized()
        req.context.caller = Caller(entry.name, entry.role)


def is_public(path: str) -> bool:
    """The probes, and the static files of the dashboard (freight_server/services/api/ui.py)
    and of /docs (freight_server/services/api/apidocs.py), which hold no data: each page asks
    for a token and sends it with every request it makes (/openapi.json included)."""
    return path in PUBLIC_ROUTES or any(
        path == page or path.startswith(f"{page}/") for page in PUBLIC_PAGES
    )


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of `Basic base64(user:password)`; None for anything else."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not password:
        return None
    return user, password


def caller_of(req: falcon.Request) -> Caller:
    """The authenticated caller; a route reached without one is a wiring bug, never an admin."""
    caller = getattr(req.context, "caller", None)
    if not isinstance(caller, Caller):
        raise RuntimeError(f"{req.path} was reached without authentication")
    return caller


# -- the gate: no tokens, no network ---------------------------------------------------------------


def check_exposure(settings: Settings) -> str:
    """What the API's log says about who may call it; raises ConfigError, before anything binds,
    for a non-loopback FREIGHT_API_BIND without a tokens file."""
    tokens = token_book(settings)
    if tokens is not None:
        return f"API tokens from {tokens.path} ({len(tokens)}): every route but probes needs one"
    if not is_loopback_bind(settings.api_bind):
        raise ConfigError(
            f"refusing FREIGHT_API_BIND={settings.api_bind}: without FREIGHT_API_TOKENS_FILE "
            "anyone who reaches the API may run any command as an admin, so it binds to "
            "loopback only (e.g. 127.0.0.1:5000). Create tokens with `freight token add NAME "
            "--admin` and set FREIGHT_API_TOKENS_FILE to serve on other addresses."
        )
    return (
        "no FREIGHT_API_TOKENS_FILE: local mode, every caller acts as an anonymous admin; "
        f"listening on loopback only ({settings.api_bind})"
    )


def is_loopback_bind(bind: str) -> bool:
    """gunicorn's `host:port`, `[v6]:port`, `host` or `unix:PATH`."""
    if bind.startswith("unix:"):
        return True  # reachable only on this host, as the socket file's permissions allow
    if "://" in bind:
        return False  # fd:// and the like: where it listens is unknown here
    host = bind
    if bind.startswith("["):
        host = bind[1 : bind.find("]")] if "]" in bind else bind
    elif bind.count(":") == 1:
        host = bind.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or empty (every address): it may resolve anywhere
