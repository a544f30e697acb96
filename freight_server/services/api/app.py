"""The falcon application: `create_app(deps)` wires the routes to their collaborators."""

from __future__ import annotations

from typing import Any

import falcon

from freight_server.services.api import auth, errors, health, tes
from freight_server.services.api.admission import Admission
from freight_server.services.api.apidocs import ApiDocs
from freight_server.services.api.files import JobFiles
from freight_server.services.api.jobs import ApiDeps, Job, JobEvents, Jobs
from freight_server.services.api.logs import JobLogs
from freight_server.services.api.openapi import OpenApi
from freight_server.services.api.runner_list import RunnerList
from freight_server.services.api.ui import Dashboard
from freight_server.services.api.usage import Usage


class ClientTimeout:
    """Bounds each read from a client's socket: a client that stops sending mid-request is
    answered 408 after `seconds` instead of holding a worker thread forever."""

    def __init__(self, seconds: float):
        self._seconds = seconds

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        sock = req.env.get("gunicorn.socket")
        if sock is not None:
            sock.settimeout(self._seconds)


def create_app(deps: ApiDeps, admission: Admission | None = None) -> falcon.App:
    """`admission`: the worker's own, when its figures are shown on /metrics (main.build)."""
    settings = deps.settings
    admission = admission or Admission.from_settings(settings)
    middleware: list[Any] = [
        ClientTimeout(settings.api_client_timeout),
        # Before anything else that works on a request, so a request past capacity is shed
        # before any other work is done on it.
        admission,
        # Every request is authenticated before any route sees it (docs/security.md).
        auth.Authentication(auth.token_book(settings)),
    ]
    app = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    # Any number of file[] parts: the request's size (FREIGHT_MAX_UPLOAD_BYTES) bounds them.
    multipart = app.req_options.media_handlers[falcon.MEDIA_MULTIPART]
    multipart.parse_options.max_body_part_count = 0  # type: ignore[attr-defined]
    errors.install(app)
    jobs = Jobs(deps)
    app.add_route("/jobs", jobs)
    app.add_route("/submission", jobs)
    app.add_route("/jobs/{job_id}", Job(deps))
    app.add_route("/jobs/{job_id}/events", JobEvents(deps))
    files = JobFiles(deps)
    app.add_route("/files", files)
    app.add_route("/jobs/{job_id}/files", files)
    app.add_route("/jobs/{job_id}/logs", JobLogs(deps))
    app.add_route("/usage", Usage(deps.jobs))
    tes.install(app, deps)  # GA4GH TES at /ga4gh/tes/v1 (docs/tes.md)
    health.install(app, deps.monitor)  # /healthz, /readyz, /metrics
    app.add_route("/openapi.json", OpenApi())
    docs = ApiDocs()
    app.add_route("/docs", docs)
    app.add_route("/docs/{asset}", docs)
    if deps.runners is not None:
        app.add_route("/runners", RunnerList(deps))
    dashboard = Dashboard()  # docs/dashboard.md
    app.add_route("/ui", dashboard)
    app.add_route("/ui/{name}", dashboard)
    return app
