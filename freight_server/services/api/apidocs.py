"""`/docs`: the OpenAPI document in Swagger UI. Swagger UI's files are vendored in the package
(`freight_server/services/api/static/swagger-ui/`, swagger-ui-dist, unmodified; see its VERSION) and
served by the API itself: no CDN, so the page works where nothing outside can be reached.

The page and its assets are public (freight_server/services/api/auth.py `is_public`): a
browser cannot send a token with a page load. The page asks for the token, reads /openapi.json
with it and sends it with every request tried from the page; /openapi.json itself still needs
it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import falcon

from freight_server.services.api.errors import not_found

PAGE = "docs.html"
# What the page may load, by the name it asks for: a name not here is a 404, never a path.
ASSETS = {
    "swagger-ui-bundle.js": ("swagger-ui/swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": ("swagger-ui/swagger-ui.css", "text/css"),
    "freight-docs.js": ("docs.js", "text/javascript"),
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str


@functools.cache
def _static(path: str, content_type: str) -> StaticFile:
    # Read once per process: every app a test builds shares the 2 MB of Swagger UI.
    body = (resources.files("freight_server.services.api") / "static" / path).read_bytes()
    return StaticFile(body, f"{content_type}; charset=utf-8")


class ApiDocs:
    """`/docs` (the page) and `/docs/{asset}` (Swagger UI's script and style)."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, asset: str | None = None) -> None:
        if asset is None:
            served = _static(PAGE, "text/html")
        elif asset in ASSETS:
            served = _static(*ASSETS[asset])
        else:
            raise not_found(f"/docs has no {asset!r}")
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.content_type = served.content_type
        resp.data = served.body
