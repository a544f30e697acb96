"""Where the CLI and SDK find the API's address and the user's token.

In order: what the caller passes, then FREIGHT_URL / FREIGHT_TOKEN, then the config file
($FREIGHT_CONFIG, else $XDG_CONFIG_HOME/freight/config, else ~/.config/freight/config):

    # ~/.config/freight/config, mode 0600
    url = https://freight.example.com
    token = frt_...

A config file that other users may read is refused, not used: it holds a token.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from freight.errors import FreightError

KEYS = ("url", "token")


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("FREIGHT_CONFIG"):
        return Path(env["FREIGHT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "freight" / "config"


def read_config(path: Path) -> dict[str, str]:
    """The file's settings, {} if there is none; raises FreightError if it is unsafe or bad."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FreightError(f"cannot read {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise FreightError(
            f"{path} may be read by other users (mode {info.st_mode & 0o777:04o}) and it holds "
            f"your token: run `chmod 600 {path}`"
        )
    try:
        text = path.read_text()
    except OSError as exc:
        raise FreightError(f"cannot read {path}: {exc.strerror}") from None
    return _parse(text, path)


def write_config(path: Path, settings: Mapping[str, str]) -> None:
    """Writes `settings` (url, token) to `path`, replacing the file whole. It is created mode
    0600 (mkstemp's) in a 0700 directory and renamed into place: never readable by others, not
    even for an instant, and never half written."""
    unknown = set(settings) - set(KEYS)
    if unknown:
        raise ValueError(f"not config keys: {sorted(unknown)}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = "".join(f"{key} = {settings[key]}\n" for key in KEYS if settings.get(key))
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _parse(text: str, path: Path) -> dict[str, str]:
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or key not in KEYS:
            raise FreightError(f"{path} line {number}: expected `url = ...` or `token = ...`")
        found[key] = value.strip().strip("\"'")
    return found


class Credentials:
    """The URL and token to use, the config file read only if something is still missing."""

    def __init__(self, url: str | None, token: str | None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.url = url or env.get("FREIGHT_URL") or None
        self.token = token or env.get("FREIGHT_TOKEN") or None
        if self.url is None or self.token is None:
            config = read_config(config_path(env))
            self.url = self.url or config.get("url") or None
            self.token = self.token or config.get("token") or None
