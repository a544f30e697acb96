"""The API in-process (falcon's test client) over the real RabbitMQ and its real projection:
what a user sends, what comes back, and how every kind of bad input is answered."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace

import falcon.testing
import pytest

from freight_server.services.api.app import create_app
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.projection import ApiProjection
from freight_server.services.api.store import JobStore, RecentSubmissions
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory
from tests.waiting import wait_until


def make_client(settings: Settings, stop: threading.Event) -> falcon.testing.TestClient:
    """The app with its projection; everything it opened is closed once `stop` is set."""
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

    def consume_then_close() -> None:
        consumer.run(stop)
        publisher.close()

    threading.Thread(target=consume_then_close, daemon=True).start()
    deps = ApiDeps(
        settings=settings,
        log=publisher,
        jobs=JobStore(engine),
        recent=RecentSubmissions(),
        new_event=EventFactory("api"),
        new_job_id=lambda: str(uuid.uuid4()),
    )
    return falcon.testing.TestClient(create_app(deps))


@pytest.fixture
def client(settings: Settings) -> Iterator[falcon.testing.TestClient]:
    stop = threading.Event()
    yield make_client(replace(settings, max_request_bytes=1024 * 1024), stop)
    stop.set()


def submit(client, **fields):
    return client.simulate_post("/jobs", json=fields)


def projected(client, job_id: str, status: str) -> dict:
    return wait_until(
        lambda: (r := client.simulate_get(f"/jobs/{job_id}")).json["status"] == status and r.json,
        what=f"{job_id} {status}",
    )


def assert_error(result, status: int, error: str, *words: str) -> None:
    assert result.status_code == status, result.text
    assert set(result.json) == {"error", "message"}, result.json
    assert result.json["error"] == error
    for word in words:
        assert word in result.json["message"]


# -- accepted submissions ------------------------------------------------------------------


def test_json_submission_is_accepted_and_readable_at_once(client):
    result = submit(client, command="echo hi", gpus=1, env={"A": "1"}, timeout=30)
    assert result.status_code == 201
    body = result.json
    assert body["command"] == "echo hi" and body["gpus"] == 1 and body["status"] == "QUEUED"
    assert result.headers["location"] == f"/jobs/{body['job_id']}"

    job = client.simulate_get(f"/jobs/{body['job_id']}").json
    assert job["status"] == "QUEUED" and job["env"] == {"A": "1"} and job["timeout"] == 30
    assert job["image"] == "freight/busybox:local" and job["attempt"] == 0


def test_gpus_is_only_echoed_when_asked_for(client):
    assert "gpus" not in submit(client, command="true").json


def test_form_submission_as_the_document_posts_it(client):
    result = client.simulate_post(
        "/submission",
        body="command=ls+-al+%2Ftmp&env=A%3D1&env=B%3D2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert result.status_code == 201, result.text
    job = client.simulate_get(result.headers["location"]).json
    assert job["command"] == "ls -al /tmp" and job["env"] == {"A": "1", "B": "2"}


def test_multipart_text_fields(client):
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="command"\r\n\r\necho hi\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="gpus"\r\n\r\n2\r\n'
        f"--{boundary}--\r\n"
    )
    result = client.simulate_post(
        "/jobs", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert result.status_code == 201, result.text
    assert result.json["gpus"] == 2


def test_every_field_of_the_job_model_is_kept_from_a_form(client):
    form = (
        "command=true&name=nightly+eval&labels=team%3Dml&labels=run%3D7&gpus=2&gpu_memory=40000"
        "&cpus=1.5&memory=2048&env=A%3D1&timeout=60&max_attempts=2&image=freight%2Fbusybox%3Alocal"
    )
    result = client.simulate_post(
        "/jobs", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert result.status_code == 201, result.text
    job = client.simulate_get(result.headers["location"]).json
    assert (job["name"], job["labels"]) == ("nightly eval", {"team": "ml", "run": "7"})
    assert (job["gpus"], job["gpu_memory"], job["cpus"], job["memory"]) == (2, 40000, 1.5, 2048)
    assert (job["env"], job["timeout"], job["max_attempts"]) == ({"A": "1"}, 60, 2)


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, words",
    [
        ({}, ["command", "required"]),
        ({"command": ""}, ["command"]),
        ({"command": "x", "gpus": -1}, ["gpus"]),
        ({"command": "x", "gpus": "many"}, ["gpus"]),
        ({"command": "x", "env": ["NOEQUALS"]}, ["env"]),
        ({"command": "x", "timeout": -5}, ["timeout"]),
        ({"command": "x", "timeout": 0}, ["timeout"]),
        ({"command": "x", "timeout": 1e12}, ["timeout"]),
        ({"command": "x", "timeout": "NaN"}, ["timeout"]),
        ({"command": "x", "colour": "red"}, ["colour"]),
    ],
)
def test_bad_fields_get_400_naming_the_field(client, fields, words):
    assert_error(submit(client, **fields), 400, "invalid_request", *words)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b""],
    ids=["broken", "array", "string", "not-utf8", "empty"],
)
def test_malformed_json_gets_400(client, body):
    result = client.simulate_post("/jobs", body=body, headers={"Content-Type": "application/json"})
    assert_error(result, 400, "invalid_request", "body")


def test_malformed_multipart_gets_400(client):
    result = client.simulate_post(
        "/jobs",
        body=b"--nope\r\nthis is not a multipart body",
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert result.status_code == 400, result.text
    assert set(result.json) == {"error", "message"}


def test_unsupported_content_type_gets_415(client):
    result = client.simulate_post("/jobs", body="command=x", headers={"Content-Type": "text/plain"})
    assert_error(result, 415, "unsupported_media_type")
    missing = client.simulate_post("/jobs", body="x")
    assert_error(missing, 415, "unsupported_media_type")


def test_oversized_bodies_get_413(client):
    huge = json.dumps({"command": "x" * (5 * 1024 * 1024)})
    result = client.simulate_post("/jobs", body=huge, headers={"Content-Type": "application/json"})
    assert_error(result, 413, "too_large")


def test_unknown_job_is_a_json_404(client):
    assert_error(client.simulate_get("/jobs/no-such-job"), 404, "not_found", "no-such-job")
    assert_error(client.simulate_delete("/jobs/no-such-job"), 404, "not_found")
    assert_error(client.simulate_get("/nothing/here"), 404, "not_found")


def test_wrong_method_is_a_json_405(client):
    result = client.simulate_put("/jobs")
    assert result.status_code == 405 and set(result.json) == {"error", "message"}


# -- cancel and list -----------------------------------------------------------------------


def test_cancel_a_queued_job_then_cancel_again(client):
    job_id = submit(client, command="sleep 100").json["job_id"]
    result = client.simulate_delete(f"/jobs/{job_id}")
    assert result.status_code == 202
    assert result.json == {"id": job_id, "message": f"job {job_id} is cancelled"}
    job = projected(client, job_id, "FAILED")
    assert job["reason"] == "cancelled" and job["finished_at"] is not None
    assert_error(client.simulate_delete(f"/jobs/{job_id}"), 409, "conflict", "FAILED")


def test_listing_counts_follow_jobs_from_status_to_status(client):
    ids = [submit(client, command=f"echo {n}").json["job_id"] for n in range(3)]
    for job_id in ids:
        projected(client, job_id, "QUEUED")
    client.simulate_delete(f"/jobs/{ids[0]}")
    projected(client, ids[0], "FAILED")

    def count(status: str) -> int:
        return int(client.simulate_get("/jobs", params={"status": status}).json["count"])

    assert (count("QUEUED"), count("FAILED"), count("QUEUED,FAILED")) == (2, 1, 3)
    assert client.simulate_get("/jobs").json["count"] == 2  # the unfinished ones
    assert count("COMPLETE") == 0


def test_listing_pages_newest_first_with_a_cursor(client):
    ids = [submit(client, command=f"echo {n}").json["job_id"] for n in range(5)]
    projected(client, ids[-1], "QUEUED")
    wait_until(lambda: client.simulate_get("/jobs").json["count"] == 5, what="5 listed")

    first = client.simulate_get("/jobs", params={"limit": 2}).json
    assert first["count"] == 5
    assert [j["job_id"] for j in first["results"]] == ids[:-3:-1]
    second = client.simulate_get(first["next"]).json
    assert [j["job_id"] for j in second["results"]] == ids[2:0:-1]
    third = client.simulate_get(second["next"]).json
    assert [j["job_id"] for j in third["results"]] == ids[:1] and third["next"] is None


def test_listing_filters_by_status(client):
    kept = submit(client, command="sleep 100").json["job_id"]
    gone = submit(client, command="sleep 100").json["job_id"]
    client.simulate_delete(f"/jobs/{gone}")
    projected(client, gone, "FAILED")

    def listed(**params):
        return [j["job_id"] for j in client.simulate_get("/jobs", params=params).json["results"]]

    assert listed() == [kept]
    assert listed(status="FAILED") == [gone]
    assert listed(status="queued,failed") == [gone, kept]
    assert listed(status="all") == [gone, kept]


def test_listing_finds_jobs_by_the_start_of_their_id(client):
    ids = [submit(client, command=f"echo {n}").json["job_id"] for n in range(3)]
    wanted = ids[1]

    def listed(prefix: str) -> dict:
        return client.simulate_get("/jobs", params={"id_prefix": prefix, "status": "all"}).json

    # Listing reads the projection, a moment behind the log.
    found = wait_until(lambda: (page := listed(wanted[:13]))["results"] and page)  # a dash too
    assert [j["job_id"] for j in found["results"]] == [wanted] and found["count"] == 1
    assert [j["job_id"] for j in listed(wanted[:8].upper())["results"]] == [wanted]
    assert listed(wanted) == found
    absent = "f" * 8 if not any(i.startswith("f" * 8) for i in ids) else "0" * 8
    assert listed(absent) == {"count": 0, "results": [], "next": None}


@pytest.mark.parametrize(
    "params",
    [
        {"status": "DONE"},
        {"id_prefix": "0d6c!"},
        {"id_prefix": "0" * 37},
        {"limit": "0"},
        {"limit": "lots"},
        {"cursor": "-1"},
        {"cursor": str(2**63)},  # past any 64-bit position: 400, not a database overflow
    ],
)
def test_bad_listing_parameters_get_400(client, params):
    assert_error(client.simulate_get("/jobs", params=params), 400, "invalid_request")


# -- the broker away -----------------------------------------------------------------------


def test_broker_unreachable_gives_503_and_accepts_nothing(settings):
    stop = threading.Event()
    away = replace(settings, amqp_url="amqp://guest:guest@127.0.0.1:1/", publish_timeout=2)
    client = make_client(away, stop)
    try:
        result = submit(client, command="true")
        assert_error(result, 503, "unavailable", "try again")
        assert result.headers["retry-after"]
        assert client.simulate_get("/jobs", params={"status": "all"}).json["count"] == 0
    finally:
        stop.set()
