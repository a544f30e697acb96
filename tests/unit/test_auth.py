"""Who may call the API and what they see: the tokens file, the bearer check, job ownership, and
the gate that keeps a token-less API on loopback."""

from __future__ import annotations

import dataclasses
import json
import stat
import uuid
from datetime import UTC, datetime
from pathlib import Path

import falcon
import falcon.testing
import pytest

from freight_server.services.api import auth
from freight_server.services.api.app import create_app
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.store import Page, RecentSubmissions
from freight_server.shared.config import ConfigError, Settings
from freight_server.shared.events import Event, EventFactory
from freight_server.shared.jobs import JobView, Status, evolve
from freight_server.shared.tokens import (
    TokensFileError,
    add_token,
    match,
    parse_tokens,
    read_tokens,
    revoke_tokens,
    token_hash,
)

# -- the tokens file -------------------------------------------------------------------------------


def test_a_new_token_is_shown_once_and_only_its_hash_is_kept(tmp_path):
    path = tmp_path / "etc" / "tokens"
    token = add_token(path, "alice", "user")
    assert token.startswith("frt_") and len(token) > 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in path.read_text()
    [entry] = read_tokens(path)
    assert (entry.name, entry.role, entry.token_sha256) == ("alice", "user", token_hash(token))
    assert match(read_tokens(path), token) == entry
    assert match(read_tokens(path), token + "x") is None


def test_tokens_are_appended_and_revoked_by_name(tmp_path):
    path = tmp_path / "tokens"
    first, second = add_token(path, "alice", "user"), add_token(path, "alice", "user")
    admin = add_token(path, "root", "admin")
    assert {match(read_tokens(path), t).name for t in (first, second, admin)} == {"alice", "root"}
    assert revoke_tokens(path, "alice") == 2
    assert [e.name for e in read_tokens(path)] == ["root"]
    assert revoke_tokens(path, "nobody") == 0


@pytest.mark.parametrize(
    "line, complaint",
    [
        ("not json", "line 2: expected"),
        ('{"name": "a", "role": "owner", "token_sha256": "' + "0" * 64 + '"}', "role must be"),
        ('{"name": "a", "role": "user", "token_sha256": "abc"}', "not a SHA-256"),
        ('{"name": "a", "role": "user"}', "line 2: expected"),
    ],
)
def test_a_malformed_tokens_file_is_refused_with_its_line(line, complaint):
    good = json.dumps({"name": "b", "role": "user", "token_sha256": "1" * 64})
    with pytest.raises(TokensFileError, match=complaint):
        parse_tokens([good, line], "tokens")


def test_a_tokens_file_others_may_write_is_refused(tmp_path):
    path = tmp_path / "tokens"
    add_token(path, "alice", "user")
    path.chmod(0o666)
    with pytest.raises(TokensFileError, match="writable by other users.*chmod 600"):
        read_tokens(path)


def test_a_missing_tokens_file_is_an_error_not_local_mode(tmp_path):
    settings = Settings(api_tokens_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match="FREIGHT_API_TOKENS_FILE.*cannot be read"):
        auth.token_book(settings)


def test_the_book_picks_up_a_token_added_while_the_api_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "RELOAD_EVERY", 0.0)
    path = tmp_path / "tokens"
    add_token(path, "alice", "user")
    book = auth.TokenBook(path)
    later = add_token(path, "bob", "user")
    found = book.find(later)
    assert found is not None and found.name == "bob"
    path.write_text("garbage\n")  # a half-done edit: the tokens that were valid stay valid
    assert book.find(later) is not None


@pytest.mark.parametrize(
    "header, token",
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header, token):
    assert auth.bearer_token(header) == token


# -- the gate --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bind, loopback",
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3:80", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("unix:/run/freight.sock", True),
        ("0.0.0.0:5000", False),
        ("[::]:5000", False),
        (":5000", False),
        ("10.0.0.5:5000", False),
        ("freight.example.com:443", False),
        ("fd://3", False),
    ],
)
def test_which_binds_are_loopback(bind, loopback):
    assert auth.is_loopback_bind(bind) is loopback


def test_without_tokens_only_loopback_is_served(tmp_path):
    said = auth.check_exposure(Settings(api_bind="127.0.0.1:5000"))
    assert "anonymous admin" in said and "loopback only" in said
    with pytest.raises(ConfigError, match="refusing FREIGHT_API_BIND=0.0.0.0:5000"):
        auth.check_exposure(Settings(api_bind="0.0.0.0:5000"))
    path = tmp_path / "tokens"
    add_token(path, "root", "admin")
    said = auth.check_exposure(Settings(api_bind="0.0.0.0:5000", api_tokens_file=path))
    assert str(path) in said


# -- the app: authentication and ownership, with fakes for the log and the read model --------------


class FakeLog:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, *events: Event) -> None:
        self.events.extend(events)


class FakeJobs:
    """The read model as the projection would leave it: the log folded, every event kept."""

    def __init__(self, log: FakeLog):
        self._log = log

    def _views(self) -> dict[str, JobView]:
        views: dict[str, JobView] = {}
        for event in self._log.events:
            view = evolve(views.get(str(event.job_id)), event)
            if view is not None:
                views[view.job_id] = view
        return views

    def get(self, job_id: str) -> JobView | None:
        return self._views().get(job_id)

    def page(self, statuses, limit, before, owner=None, id_prefix=None) -> Page:
        jobs = [
            v
            for v in self._views().values()
            if (owner is None or v.owner == owner) and v.job_id.startswith(id_prefix or "")
        ]
        return Page(jobs=jobs, total=len(jobs), next_cursor=None)

    def events(self, job_id: str) -> list[dict]:
        return [e.to_dict() for e in self._log.events if e.job_id == job_id]


@pytest.fixture
def tokens(tmp_path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens"
    names = {"alice": "user", "bob": "user", "root": "admin"}
    return path, {name: add_token(path, name, role) for name, role in names.items()}


def app_for(settings: Settings) -> tuple[falcon.testing.TestClient, FakeLog]:
    log = FakeLog()
    deps = ApiDeps(
        settings=settings,
        log=log,
        jobs=FakeJobs(log),  # type: ignore[arg-type]
        recent=RecentSubmissions(),
        new_event=EventFactory("api", clock=lambda: datetime(2030, 1, 1, tzinfo=UTC)),
        new_job_id=lambda: str(uuid.uuid4()),
    )
    return falcon.testing.TestClient(create_app(deps)), log


@pytest.fixture
def secured(tokens) -> tuple[falcon.testing.TestClient, FakeLog, dict[str, dict[str, str]]]:
    path, issued = tokens
    client, log = app_for(Settings(api_tokens_file=path, secret_key=None))
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in issued.items()}
    return client, log, headers


def test_every_route_but_the_probes_wants_a_token(secured):
    client, _, headers = secured
    for path in ("/jobs", "/jobs/x", "/jobs/x/events", "/jobs/x/logs", "/openapi.json", "/nope"):
        refused = client.simulate_get(path)
        assert refused.status_code == 401, path
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="freight"'
        assert refused.json == {
            "error": "unauthorized",
            "message": auth.unauthorized().description,
        }
        wrong = client.simulate_get(path, headers={"Authorization": "Bearer frt_nope"})
        assert (wrong.status_code, wrong.json) == (401, refused.json)
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/openapi.json", headers=headers["bob"]).status_code == 200


def test_a_job_belongs_to_whoever_submitted_it(secured):
    client, log, headers = secured
    created = client.simulate_post("/jobs", json={"command": "true"}, headers=headers["alice"])
    assert created.status_code == 201
    job_id = created.json["job_id"]
    assert log.events[0].data["owner"] == "alice"

    missing_id = str(uuid.uuid4())
    for method, path in (
        ("GET", "/jobs/{}"),
        ("GET", "/jobs/{}/events"),
        ("GET", "/jobs/{}/logs"),
        ("GET", "/jobs/{}/files?path=/job"),
        ("DELETE", "/jobs/{}"),
    ):
        route, _, query = path.partition("?")
        foreign = client.simulate_request(
            method, route.format(job_id), query_string=query, headers=headers["bob"]
        )
        missing = client.simulate_request(
            method, route.format(missing_id), query_string=query, headers=headers["bob"]
        )
        assert foreign.status_code == missing.status_code == 404, path
        assert foreign.text == missing.text.replace(missing_id, job_id), path
    assert len(log.events) == 1  # bob's DELETE appended nothing

    assert client.simulate_get("/jobs", headers=headers["bob"]).json["count"] == 0
    mine = client.simulate_get("/jobs", headers=headers["alice"]).json
    assert [j["owner"] for j in mine["results"]] == ["alice"]
    for who in ("alice", "root"):
        assert client.simulate_get(f"/jobs/{job_id}", headers=headers[who]).status_code == 200
    assert client.simulate_delete(f"/jobs/{job_id}", headers=headers["root"]).status_code == 202


def test_in_local_mode_everyone_is_the_anonymous_admin():
    client, log = app_for(Settings())
    created = client.simulate_post("/jobs", json={"command": "true"})
    assert created.status_code == 201
    assert log.events[0].data["owner"] == "anonymous"
    assert client.simulate_get(f"/jobs/{created.json['job_id']}").json["owner"] == "anonymous"


def test_a_view_stored_before_owners_existed_still_loads():
    view = JobView("j", Status.QUEUED, "true", "busybox", datetime(2030, 1, 1, tzinfo=UTC))
    stored = view.to_dict()
    del stored["owner"], stored["secret_env"]
    loaded = JobView.from_dict(stored)
    assert loaded.owner == "anonymous" and loaded.secret_env == {}


def test_a_route_reached_without_authentication_is_a_bug_not_an_admin():
    req = falcon.testing.create_req()
    with pytest.raises(RuntimeError, match="without authentication"):
        auth.caller_of(req)


def test_the_api_logs_no_token(secured, caplog):
    client, _, headers = secured
    token = headers["alice"]["Authorization"].split()[1]
    with caplog.at_level("DEBUG"):
        client.simulate_post("/jobs", json={"command": "true"}, headers=headers["alice"])
        client.simulate_get("/jobs", headers={"Authorization": f"Bearer {token}x"})
    assert token not in caplog.text
    assert "refused GET /jobs" in caplog.text


def test_settings_never_show_their_secrets():
    settings = Settings(amqp_url="amqp://u:hunter2@broker/", secret_key="k" * 44)
    assert "hunter2" not in repr(settings) and "k" * 44 not in repr(settings)
    assert {f.name for f in dataclasses.fields(settings) if not f.repr} == {
        "amqp_url",
        "secret_key",
    }


def test_freight_token_prints_the_token_once_and_keeps_its_hash(tmp_path, capsys):
    from freight.cli import main

    path = tmp_path / "tokens"
    assert main(["token", "--file", str(path), "add", "alice"]) == 0
    token = capsys.readouterr().out.strip()
    assert match(read_tokens(path), token).role == "user"
    assert main(["--json", "token", "--file", str(path), "add", "ops", "--admin"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "admin"
    assert main(["token", "--file", str(path), "list"]) == 0
    listed = capsys.readouterr().out
    assert listed == "alice\tuser\nops\tadmin\n" and token not in listed
    assert main(["token", "--file", str(path), "add", "bad name"]) == 2
    assert "user name 'bad name'" in capsys.readouterr().err
    assert main(["token", "--file", str(path), "revoke", "alice"]) == 0
    assert [e.name for e in read_tokens(path)] == ["ops"]
