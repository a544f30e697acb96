"""Quotas go from the tokens file to the log (OwnerQuotaSet); `GET /usage` shows a user their
own usage and an admin everyone's."""

from __future__ import annotations

import uuid
from typing import Any

import falcon.testing
import pytest

from freight.cli import main as freight
from freight_server.services.api.app import create_app
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.quotas import QuotaAnnouncer
from freight_server.services.api.store import RecentSubmissions
from freight_server.shared.bus import BrokerUnavailable
from freight_server.shared.config import Settings
from freight_server.shared.events import Event, EventFactory
from freight_server.shared.tokens import add_token, read_quotas, read_tokens


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.down = False

    def append(self, *events: Event) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        self.events.extend(events)

    def take(self) -> list[tuple[str, Any, Any]]:
        taken, self.events = self.events, []
        return [(e.data["owner"], e.data["max_gpus"], e.data["max_running"]) for e in taken]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_quotas_live_beside_the_tokens_and_the_last_line_wins(tmp_path):
    path = tmp_path / "tokens"
    add_token(path, "alice", "user")
    assert freight(["token", "--file", str(path), "quota", "alice", "--max-gpus", "2"]) == 0
    assert freight(["token", "--file", str(path), "quota", "alice", "--max-running", "5"]) == 0
    assert read_quotas(path) == {"alice": {"max_gpus": None, "max_running": 5}}
    assert [e.name for e in read_tokens(path)] == ["alice"]  # the token is untouched
    assert freight(["token", "--file", str(path), "quota", "alice", "--max-gpus", "-1"]) == 2


def test_the_announcer_tells_the_log_each_quota_as_it_changes(tmp_path):
    path = tmp_path / "tokens"
    add_token(path, "alice", "user")
    log, clock = RecordingLog(), Clock()
    announcer = QuotaAnnouncer(path, log, EventFactory("api"), monotonic=clock)
    freight(["token", "--file", str(path), "quota", "alice", "--max-gpus", "2"])
    freight(["token", "--file", str(path), "quota", "bob", "--max-running", "1"])

    announcer.run_if_due()
    assert sorted(log.take()) == [("alice", 2, None), ("bob", None, 1)]
    clock.now += 5
    announcer.run_if_due()
    assert log.take() == []  # nothing changed

    freight(["token", "--file", str(path), "quota", "bob"])  # lifted
    log.down = True
    clock.now += 5
    announcer.run_if_due()
    log.down = False
    clock.now += 5
    announcer.run_if_due()  # retried once the broker is back
    assert log.take() == [("bob", None, None)]


class Store:
    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def usage(self, owner: str | None) -> list[dict[str, Any]]:
        return [r for r in self.rows if owner is None or r["owner"] == owner]


@pytest.fixture
def client(tmp_path):
    path = tmp_path / "tokens"
    tokens = {
        name: add_token(path, name, role) for name, role in (("alice", "user"), ("root", "admin"))
    }
    rows = [
        {"owner": o, "jobs": 1, "run_seconds": 1.0, "gpu_seconds": 2.0, "cpu_seconds": 1.0}
        for o in ("alice", "bob")
    ]
    deps = ApiDeps(
        settings=Settings(api_tokens_file=path),
        log=None,  # type: ignore[arg-type]
        jobs=Store(rows),  # type: ignore[arg-type]
        recent=RecentSubmissions(),
        new_event=EventFactory("api"),
        new_job_id=lambda: str(uuid.uuid4()),
    )
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    return falcon.testing.TestClient(create_app(deps)), headers


def test_a_user_sees_their_own_usage_and_an_admin_everyones(client):
    api, headers = client
    mine = api.simulate_get("/usage", headers=headers["alice"])
    assert [r["owner"] for r in mine.json["results"]] == ["alice"]
    assert api.simulate_get("/usage?owner=bob", headers=headers["alice"]).status_code == 403
    everyone = api.simulate_get("/usage", headers=headers["root"])
    assert [r["owner"] for r in everyone.json["results"]] == ["alice", "bob"]
    one = api.simulate_get("/usage?owner=bob", headers=headers["root"])
    assert [r["owner"] for r in one.json["results"]] == ["bob"]
    assert api.simulate_get("/usage").status_code == 401
