"""`GET /runners`: every runner the API has heard of, as its last heartbeat described it.

Runners are the cluster's, not a user's: any caller with a token sees them all (slots, GPUs,
CPUs, memory, when each was last heard). Only the jobs running on them are the callers': a user
sees their own among them, an admin every one, so nobody learns another user's job ids.
"""

from __future__ import annotations

import falcon

from freight_server.services.api.auth import caller_of
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.runners import present_runner, running_attempts


class RunnerList:
    def __init__(self, deps: ApiDeps):
        assert deps.runners is not None
        self._deps = deps
        self._runners = deps.runners

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        caller = caller_of(req)
        rows = self._runners.all()
        if caller.is_admin:
            owners = None
        else:
            running = {job_id for row in rows for job_id, _ in running_attempts(row.heartbeat)}
            owners = self._runners.owners(running)

        def may_see(job_id: str) -> bool:
            return owners is None or owners.get(job_id) == caller.name

        now = self._deps.new_event.clock()
        deadline = self._deps.settings.runner_deadline
        results = [present_runner(row, now, deadline, may_see) for row in rows]
        resp.media = {"count": len(results), "results": results}
