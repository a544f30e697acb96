"""The dashboard's side of the API: `/ui` served from the package without a token, `GET /runners`
(any token sees the runners, only an admin every job on them), and `GET /jobs?owner=`.
The page itself is driven in a browser by tests/e2e/test_dashboard.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import falcon.testing
import pytest

from freight_server.services.api.app import create_app
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.runners import present_runner, runner_state
from freight_server.services.api.store import Page, RecentSubmissions
from freight_server.services.api.ui import INDEX, load_assets
from freight_server.shared.config import Settings
from freight_server.shared.events import EventFactory
from freight_server.shared.tokens import add_token

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeJobs:
    """Records what each listing asked for; always has one more page."""

    asked: list[dict[str, Any]] = field(default_factory=list)

    def get(self, job_id: str) -> None:
        return None

    def page(self, statuses, limit, before, owner=None, id_prefix=None) -> Page:
        self.asked.append({"statuses": statuses, "limit": limit, "owner": owner})
        return Page(jobs=[], total=0, next_cursor=7)


@dataclass
class FakeRunners:
    rows: list[Any]
    owners_of: dict[str, str]

    def all(self) -> list[Any]:
        return self.rows

    def owners(self, job_ids) -> dict[str, str]:
        return {j: self.owners_of[j] for j in job_ids if j in self.owners_of}


def heartbeat(running: list[str], held: int) -> dict[str, Any]:
    gpus = [{"index": i, "uuid": f"GPU-{i}", "name": "Sim", "memory_mb": 16384} for i in range(2)]
    return {
        "runner": "r1",
        "slots": 4,
        "gpus": gpus,
        "cpus": 8.0,
        "memory_mb": 32768,
        "running": running,
        "free": {
            "slots": 4 - len(running),
            "gpus": [g["uuid"] for g in gpus[held:]],
            "cpus": 6.0,
            "memory_mb": 30000,
        },
    }


def runner_row(runner_id: str, seen_ago: float, lost: bool = False, **beat: Any) -> Any:
    return SimpleNamespace(
        runner_id=runner_id,
        last_seen=NOW - timedelta(seconds=seen_ago),
        lost=lost,
        heartbeat=heartbeat(**beat),
    )


@pytest.fixture
def app(tmp_path) -> tuple[falcon.testing.TestClient, FakeJobs, dict[str, dict[str, str]]]:
    path = tmp_path / "tokens"
    tokens = {
        name: add_token(path, name, role)
        for name, role in (("alice", "user"), ("bob", "user"), ("root", "admin"))
    }
    jobs = FakeJobs()
    runners = FakeRunners(
        [
            runner_row("r1", 2, running=["job-a/1", "job-b/2"], held=1),
            runner_row("r2", 120, lost=True, running=[], held=0),
        ],
        {"job-a": "alice", "job-b": "bob"},
    )
    deps = ApiDeps(
        settings=Settings(api_tokens_file=path, runner_deadline=30),
        log=None,  # type: ignore[arg-type]
        jobs=jobs,  # type: ignore[arg-type]
        recent=RecentSubmissions(),
        new_event=EventFactory("api", clock=lambda: NOW),
        new_job_id=lambda: str(uuid.uuid4()),
        runners=runners,  # type: ignore[arg-type]
    )
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    return falcon.testing.TestClient(create_app(deps)), jobs, headers


# -- /ui ------------------------------------------------------------------------------------------


def test_the_dashboard_is_served_from_the_package_without_a_token(app):
    client, _, _ = app
    page = client.simulate_get("/ui")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "/ui/dashboard.js" in page.text and "/ui/dashboard.css" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    script = client.simulate_get("/ui/dashboard.js")
    assert script.status_code == 200 and script.headers["Content-Type"].startswith(
        "text/javascript"
    )
    assert client.simulate_get("/ui/dashboard.css").headers["Content-Type"].startswith("text/css")
    # Revalidated, and answered 304 when unchanged.
    again = client.simulate_get("/ui", headers={"If-None-Match": page.headers["ETag"]})
    assert again.status_code == 304 and not again.content


def test_only_the_dashboards_own_files_are_served(app):
    client, _, _ = app
    for name in ("/ui/nope.js", "/ui/..%2Fapp.py", "/ui/%2e%2e"):
        assert client.simulate_get(name).status_code == 404, name
    # Everything else still needs a token: being under /ui does not open the API.
    assert client.simulate_get("/uix").status_code == 401
    assert client.simulate_get("/jobs").status_code == 401


def test_every_asset_the_page_names_is_shipped():
    assets = load_assets()
    index = assets[INDEX].body.decode()
    for name in ("dashboard.js", "dashboard.css", "favicon.svg"):
        assert f"/ui/{name}" in index and name in assets


# -- GET /runners ---------------------------------------------------------------------------------


def test_a_runner_as_its_last_heartbeat_told(app):
    client, _, headers = app
    runners = client.simulate_get("/runners", headers=headers["root"]).json
    assert runners["count"] == 2
    live, lost = runners["results"]
    assert live == {
        "runner_id": "r1",
        "state": "live",
        "last_heartbeat": (NOW - timedelta(seconds=2)).isoformat(),
        "slots": 4,
        "slots_free": 2,
        "gpus": [
            {"index": 0, "uuid": "GPU-0", "name": "Sim", "memory_mb": 16384, "held": True},
            {"index": 1, "uuid": "GPU-1", "name": "Sim", "memory_mb": 16384, "held": False},
        ],
        "cpus": 8.0,
        "cpus_free": 6.0,
        "memory_mb": 32768,
        "memory_free_mb": 30000,
        "jobs": [{"job_id": "job-a", "attempt": 1}, {"job_id": "job-b", "attempt": 2}],
    }
    assert lost["state"] == "lost" and lost["jobs"] == []


def test_users_see_every_runner_but_only_their_own_jobs_on_it(app):
    client, _, headers = app
    assert client.simulate_get("/runners").status_code == 401
    [r1, _] = client.simulate_get("/runners", headers=headers["alice"]).json["results"]
    assert r1["jobs"] == [{"job_id": "job-a", "attempt": 1}]
    assert r1["slots_free"] == 2  # the capacity is the cluster's, shown whole


def test_a_runner_unheard_past_the_deadline_is_silent_until_declared_lost():
    assert runner_state(False, NOW - timedelta(seconds=29), NOW, 30) == "live"
    assert runner_state(False, NOW - timedelta(seconds=31), NOW, 30) == "silent"
    assert runner_state(True, NOW, NOW, 30) == "lost"
    # SQLite's naive datetimes are UTC.
    assert runner_state(False, (NOW - timedelta(seconds=1)).replace(tzinfo=None), NOW, 30) == "live"


def test_a_heartbeat_from_before_free_was_reported_shows_nothing_held():
    row = SimpleNamespace(
        runner_id="old", last_seen=NOW, lost=False, heartbeat={"slots": 2, "gpus": 0, "running": []}
    )
    shown = present_runner(row, NOW, 30, lambda job_id: True)
    assert (shown["slots"], shown["slots_free"], shown["gpus"], shown["cpus"]) == (2, 2, [], None)


# -- GET /jobs?owner= -----------------------------------------------------------------------------


def test_an_admin_lists_one_owners_jobs_and_the_next_page_keeps_the_filter(app):
    client, jobs, headers = app
    page = client.simulate_get(
        "/jobs", params={"owner": "alice", "status": "QUEUED,FAILED"}, headers=headers["root"]
    ).json
    assert jobs.asked[-1]["owner"] == "alice"
    assert page["next"] == "/jobs?limit=100&cursor=7&status=QUEUED%2CFAILED&owner=alice"
    client.simulate_get(page["next"], headers=headers["root"])
    assert jobs.asked[-1]["owner"] == "alice" and len(jobs.asked[-1]["statuses"]) == 2
    client.simulate_get("/jobs", headers=headers["root"])
    assert jobs.asked[-1]["owner"] is None  # every owner's


def test_a_user_lists_only_their_own_jobs(app):
    client, jobs, headers = app
    client.simulate_get("/jobs", headers=headers["alice"])
    assert jobs.asked[-1]["owner"] == "alice"
    client.simulate_get("/jobs", params={"owner": "alice"}, headers=headers["alice"])
    assert jobs.asked[-1]["owner"] == "alice"
    refused = client.simulate_get("/jobs", params={"owner": "bob"}, headers=headers["alice"])
    assert refused.status_code == 403 and refused.json["error"] == "forbidden"


# -- /docs ----------------------------------------------------------------------------------------


def test_the_docs_page_is_public_but_the_document_it_shows_is_not(app):
    client, _, headers = app
    for path in ("/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
        assert client.simulate_get(path).status_code == 200, path
    script = client.simulate_get("/docs/freight-docs.js")
    assert script.status_code == 200
    # The page reads the document with the user's token, and sends it with what it tries.
    assert "Authorization" in script.text and "requestInterceptor" in script.text
    assert client.simulate_get("/openapi.json").status_code == 401
    assert client.simulate_get("/docsx").status_code == 401
    token = next(iter(headers.values()))
    assert client.simulate_get("/openapi.json", headers=token).status_code == 200
