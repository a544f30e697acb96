"""The falcon application: `create_app(deps)` wires the routes to their collaborators."""

from __future__ import annotations

import falcon

from services.api import errors
from services.api.jobs import ApiDeps, Job, JobEvents, Jobs


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_app(deps: ApiDeps) -> falcon.App:
    app = falcon.App()
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    jobs = Jobs(deps)
    app.add_route("/jobs", jobs)
    app.add_route("/submission", jobs)
    app.add_route("/jobs/{job_id}", Job(deps))
    app.add_route("/jobs/{job_id}/events", JobEvents(deps))
    app.add_route("/healthz", Health())
    return app
