"""`Idempotency-Key` over the real RabbitMQ and the API's real projection: a retried submission
answers with the job the key first made, even after a publish that timed out yet landed."""

from __future__ import annotations

import threading
import uuid
import wsgiref.simple_server
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import falcon.testing
import pytest

from freight import cli
from freight import client as sdk
from freight_server.services.api.app import create_app
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.projection import ApiProjection
from freight_server.services.api.store import JobStore, RecentSubmissions
from freight_server.shared.bus import ConfirmMissing, Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import Event, EventFactory
from freight_server.shared.tokens import add_token
from tests.waiting import wait_until

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
START = datetime(2030, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


class LandsThenTimesOut:
    """A publisher whose next confirm comes too late: the event is in the log, yet the API
    hears ConfirmMissing, as when RabbitMQ confirms after FREIGHT_PUBLISH_TIMEOUT."""

    def __init__(self, publisher: Publisher):
        self._publisher = publisher
        self.time_out_next = False

    def append(self, *events: Event) -> None:
        self._publisher.append(*events)
        if self.time_out_next:
            self.time_out_next = False
            raise ConfirmMissing("RabbitMQ did not confirm within 5s")


@dataclass
class Api:
    client: falcon.testing.TestClient
    app: falcon.App
    tokens: dict[str, str]
    log: LandsThenTimesOut
    clock: Clock
    headers: dict[str, dict[str, str]]  # each user's Authorization header
    start_projection: threading.Event  # the projection reads the log once this is set

    def submit(self, user: str = "alice", key: str | None = "k-1", **fields):
        headers = {**self.headers[user], **({KEY: key} if key is not None else {})}
        return self.client.simulate_post(
            "/jobs", json={"command": "echo hi", **fields}, headers=headers
        )

    def get(self, path: str, user: str = "alice"):
        return self.client.simulate_get(path, headers=self.headers[user])


def build_api(settings: Settings, tokens: Path, stop: threading.Event) -> Api:
    engine = create_engine(settings.database_url_for("api"))
    migrate(engine, "api")
    topology = Topology.from_settings(settings)
    publisher = Publisher(settings.amqp_url, topology, "api-test", settings.publish_timeout)
    consumer = StreamConsumer(
        settings.amqp_url,
        topology,
        engine,
        ApiProjection(engine, publisher, settings.response_exchange),
    )
    start_projection = threading.Event()

    def consume_then_close() -> None:
        while not (start_projection.wait(0.05) or stop.is_set()):
            pass
        consumer.run(stop)
        publisher.close()

    threading.Thread(target=consume_then_close, daemon=True).start()
    clock = Clock()
    log = LandsThenTimesOut(publisher)
    deps = ApiDeps(
        settings=replace(settings, api_tokens_file=tokens),
        log=log,
        jobs=JobStore(engine),
        recent=RecentSubmissions(),
        new_event=EventFactory("api", clock=clock),
        new_job_id=lambda: str(uuid.uuid4()),
    )
    issued = {name: add_token(tokens, name, "user") for name in ("alice", "bob")}
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in issued.items()}
    app = create_app(deps)
    client = falcon.testing.TestClient(app)
    return Api(client, app, issued, log, clock, headers, start_projection)


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[Api]:
    stop = threading.Event()
    built = build_api(settings, tmp_path / "tokens", stop)
    yield built
    stop.set()


def projected(api: Api, job_id: str, user: str = "alice") -> dict:
    """The job as the projection has it (not the API's memory of what it just accepted)."""

    def listed() -> dict | None:
        jobs = api.get("/jobs", user).json["results"]
        return next((job for job in jobs if job["job_id"] == job_id), None)

    return wait_until(listed, what=f"{job_id} projected")


def submitted_events(api: Api, job_id: str) -> list[dict]:
    events = api.get(f"/jobs/{job_id}/events").json["events"]
    return [e for e in events if e["type"] == "JobSubmitted"]


def test_the_same_key_twice_is_one_job(api):
    api.start_projection.set()
    first = api.submit(gpus=1)
    assert first.status_code == 201, first.text
    assert REPLAYED not in first.headers
    job_id = first.json["job_id"]
    projected(api, job_id)

    again = api.submit(gpus=1)
    assert again.status_code == 201, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.json == first.json
    assert again.headers["location"] == f"/jobs/{job_id}"
    listed = api.get("/jobs").json
    assert listed["count"] == 1 and [j["job_id"] for j in listed["results"]] == [job_id]
    assert len(submitted_events(api, job_id)) == 1  # the replay appended nothing
    assert submitted_events(api, job_id)[0]["data"]["idempotency_key"] == "k-1"


def test_the_same_key_from_another_owner_is_another_job(api):
    api.start_projection.set()
    alices = api.submit("alice").json["job_id"]
    bobs = api.submit("bob")
    assert bobs.status_code == 201 and REPLAYED not in bobs.headers
    assert bobs.json["job_id"] != alices
    assert projected(api, alices)["owner"] == "alice"
    assert projected(api, bobs.json["job_id"], "bob")["owner"] == "bob"
    assert api.get(f"/jobs/{bobs.json['job_id']}", "alice").status_code == 404


@pytest.mark.parametrize(
    "other", [{"command": "echo bye"}, {"gpus": 2}, {"env": {"A": "1"}}, {"timeout": 60}]
)
def test_a_key_reused_for_another_job_is_422(api, other):
    api.start_projection.set()
    job_id = api.submit().json["job_id"]
    refused = api.submit(**other)
    assert refused.status_code == 422, refused.text
    assert refused.json["error"] == "idempotency_key_reused"
    assert refused.json["job_id"] == job_id
    assert next(iter(other)) in refused.json["message"]
    projected(api, job_id)
    assert api.get("/jobs").json["count"] == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9", "line\nbreak"])
def test_a_bad_key_is_400_naming_the_header(api, key):
    refused = api.submit(key=key)
    assert refused.status_code == 400, refused.text
    assert set(refused.json) == {"error", "message"}
    assert refused.json["error"] == "invalid_request"
    assert KEY in refused.json["message"]


def test_the_longest_and_oddest_printable_keys_are_accepted(api):
    assert api.submit(key="~" * 255).status_code == 201
    assert api.submit(key=" !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}").status_code == 201


def test_a_retry_after_a_timed_out_publish_that_landed_is_the_same_job(api):
    # The projection reads nothing yet: the retry cannot know the first publish landed.
    api.log.time_out_next = True
    timed_out = api.submit()
    assert timed_out.status_code == 503, timed_out.text
    assert timed_out.json["error"] == "unavailable"
    assert KEY in timed_out.json["message"]
    job_id = timed_out.json["job_id"]

    retried = api.submit()
    assert retried.status_code == 201, retried.text
    assert retried.json["job_id"] == job_id

    api.start_projection.set()
    wait_until(lambda: len(submitted_events(api, job_id)) == 2, what="both JobSubmitted read")
    listed = api.get("/jobs").json
    assert listed["count"] == 1 and [j["job_id"] for j in listed["results"]] == [job_id]
    assert projected(api, job_id)["status"] == "QUEUED"
    assert api.submit().headers[REPLAYED] == "true"


def test_a_timed_out_publish_without_a_key_says_the_job_may_exist(api):
    api.start_projection.set()
    api.log.time_out_next = True
    timed_out = api.submit(key=None)
    assert timed_out.status_code == 503, timed_out.text
    assert timed_out.json["error"] == "unavailable"
    assert "may still have been accepted" in timed_out.json["message"]
    assert projected(api, timed_out.json["job_id"])["command"] == "echo hi"


def test_a_key_names_a_new_job_once_its_job_is_a_day_old(api):
    api.start_projection.set()
    first = api.submit().json["job_id"]
    projected(api, first)

    api.clock.now = START + timedelta(hours=23, minutes=59)
    assert api.submit().json["job_id"] == first

    api.clock.now = START + timedelta(hours=24)
    later = api.submit()
    assert later.status_code == 201 and REPLAYED not in later.headers
    second = later.json["job_id"]
    assert second != first
    projected(api, second)

    # The key now names the second job for a day, whatever the first became.
    api.clock.now = START + timedelta(hours=30)
    assert api.submit().json["job_id"] == second
    api.clock.now = START + timedelta(hours=48)
    third = api.submit().json["job_id"]
    assert third not in (first, second)
    projected(api, third)
    assert api.get("/jobs").json["count"] == 3


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_timeouts_json_cannot_hold_are_400(api, literal):
    body = f'{{"command": "x", "timeout": {literal}}}'
    refused = api.client.simulate_post(
        "/jobs", body=body, headers={**api.headers["alice"], "Content-Type": "application/json"}
    )
    assert refused.status_code == 400, refused.text
    assert "timeout" in refused.json["message"]


# -- the SDK and the CLI -------------------------------------------------------------------


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def url(api) -> Iterator[str]:
    """The API over real HTTP, for the SDK."""
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, api.app, handler_class=QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_the_sdk_retries_a_timed_out_submission_with_its_key(api, url):
    api.log.time_out_next = True  # the first try's publish lands, yet is answered 503
    with sdk.Client(url, api.tokens["alice"], sleep=lambda _seconds: None) as client:
        job = client.submit("echo hi")
        another = client.submit("echo hi")  # a new call: a new key, a new job
    assert another.job_id != job.job_id
    api.start_projection.set()
    wait_until(lambda: len(submitted_events(api, job.job_id)) == 2, what="both JobSubmitted")
    keys = {e["data"]["idempotency_key"] for e in submitted_events(api, job.job_id)}
    assert len(keys) == 1  # the retry sent the same key
    projected(api, another.job_id)
    assert api.get("/jobs").json["count"] == 2


def test_the_sdk_and_the_cli_take_a_key_of_ones_own(api, url, monkeypatch, capsys):
    api.start_projection.set()
    with sdk.Client(url, api.tokens["alice"]) as client:
        job_id = client.submit("echo hi", idempotency_key="nightly-2030-01-01").job_id
    monkeypatch.setenv("FREIGHT_TOKEN", api.tokens["alice"])
    capsys.readouterr()
    argv = ["--url", url, "submit", "--idempotency-key", "nightly-2030-01-01", "--", "echo hi"]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == job_id
