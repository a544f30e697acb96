"""`/ui`: the dashboard, a static page and its script and style, shipped in the package
(`freight_server/services/api/ui_static/`) and served from memory: no CDN, no build step.

The files are public, like /healthz: they hold no data. Everything the page shows it fetches
from the API's own routes with the user's bearer token (asked once, kept in the tab's
sessionStorage), so the dashboard sees exactly what the token may see and nothing more.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import falcon

from freight_server.services.api.errors import not_found

ASSETS_PACKAGE = "freight_server.services.api"
ASSETS_FOLDER = "ui_static"
INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page runs only its own script and talks only to this API; nothing may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of the dashboard, by name (a name not here is a 404: no path reaches a disk)."""
    folder = resources.files(ASSETS_PACKAGE) / ASSETS_FOLDER
    assets = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in CONTENT_TYPES:
            body = entry.read_bytes()
            etag = hashlib.sha256(body).hexdigest()[:32]
            assets[entry.name] = Asset(body, CONTENT_TYPES[suffix], etag)
    if INDEX not in assets:
        raise RuntimeError(f"the dashboard's {INDEX} is missing from {folder}")
    return assets


class Dashboard:
    """`/ui` (the page) and `/ui/{name}` (its script, style and icon)."""

    def __init__(self, assets: dict[str, Asset] | None = None):
        self._assets = assets if assets is not None else load_assets()

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str = INDEX) -> None:
        asset = self._assets.get(name)
        if asset is None:
            raise not_found(f"the dashboard has no {name!r}")
        for header, value in SECURITY_HEADERS.items():
            resp.set_header(header, value)
        # Revalidated on every load, so an upgraded API never runs yesterday's script.
        resp.set_header("Cache-Control", "no-cache")
        resp.etag = asset.etag
        if req.if_none_match and any(tag == asset.etag for tag in req.if_none_match):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = asset.content_type
        resp.data = asset.body
