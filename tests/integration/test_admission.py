"""Admission control on the API as gunicorn's workers build it (`main.build`), over the real
RabbitMQ and database, with room for one request at a time: past it a request is answered 503
at once, the probes still answer, and a log follower holds no room while it follows."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import falcon
import falcon.testing
import pytest

from freight_server.services.api.admission import Admission
from freight_server.services.api.main import build
from freight_server.shared.config import ConfigError, Settings
from freight_server.shared.db import create_engine, migrate
from tests.waiting import wait_until


@pytest.fixture
def app(settings: Settings) -> Iterator[falcon.App]:
    narrow = replace(settings, api_max_concurrent=1, api_admission_wait=0.05)
    migrate(create_engine(narrow.database_url_for("api")), "api")
    stop = threading.Event()
    built = build(narrow, stop)
    client = falcon.testing.TestClient(built)
    wait_until(lambda: client.simulate_get("/readyz").status_code == 200, what="ready")
    yield built
    stop.set()


class HeldBody(io.RawIOBase):
    """A request body that arrives only once the test lets it: a slow client's upload, which
    holds its slot (reading a body is the API's work) until it is all there."""

    def __init__(self, body: bytes):
        self.reading = threading.Event()
        self.release = threading.Event()
        self._body = io.BytesIO(body)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.reading.set()
        self.release.wait(30)
        return self._body.readinto(buffer)


class Call:
    """One WSGI call of the app, as a server makes it: `body` is what it returned, unread."""

    def __init__(self, app: falcon.App, environ: dict[str, Any]):
        self.status = ""
        self.headers: dict[str, str] = {}
        self.body = app(environ, self._start_response)

    def _start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
    ) -> Any:
        self.status = status
        self.headers = dict(headers)
        return lambda data: None


def hold_a_slot(app: falcon.App) -> tuple[HeldBody, threading.Thread, list[Call]]:
    payload = json.dumps({"command": "true"}).encode()
    held = HeldBody(payload)
    environ = falcon.testing.create_environ(
        method="POST", path="/jobs", headers={"Content-Type": "application/json"}
    )
    environ["wsgi.input"] = held
    environ["CONTENT_LENGTH"] = str(len(payload))
    done: list[Call] = []
    thread = threading.Thread(target=lambda: done.append(Call(app, environ)), daemon=True)
    thread.start()
    assert held.reading.wait(20), "the held request never reached its responder"
    return held, thread, done


def test_past_the_bound_a_request_is_shed_with_503_and_probes_still_answer(app):
    client = falcon.testing.TestClient(app)
    held, thread, done = hold_a_slot(app)

    shed = client.simulate_get("/jobs")
    assert shed.status_code == 503, shed.text
    assert shed.json["error"] == "overloaded"
    assert "try again" in shed.json["message"]
    assert int(shed.headers["Retry-After"]) >= 1
    # Answered while the one slot was still taken: it did not wait for it to come free.
    assert thread.is_alive() and not done
    # A shed request's (small) body is read to its end all the same, so that the connection it
    # came on can carry the next request (gunicorn closes one left with a body unread).
    body = io.BytesIO(json.dumps({"command": "true"}).encode())
    environ = falcon.testing.create_environ(
        method="POST", path="/jobs", headers={"Content-Type": "application/json"}
    )
    environ.update({"wsgi.input": body, "CONTENT_LENGTH": str(len(body.getvalue()))})
    assert Call(app, environ).status.startswith("503")
    assert body.tell() == len(body.getvalue())

    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/readyz").status_code == 200
    metrics = client.simulate_get("/metrics")
    assert metrics.status_code == 200
    assert "freight_api_requests_admitted 1.0" in metrics.text
    assert "freight_api_requests_shed_total 2.0" in metrics.text

    held.release.set()
    thread.join(20)
    assert done and done[0].status.startswith("201"), done
    # The slot came back: the next request is served.
    assert client.simulate_get("/jobs").status_code == 200


def test_a_log_follower_holds_no_slot_while_it_follows(app):
    client = falcon.testing.TestClient(app)
    submitted = client.simulate_post("/jobs", json={"command": "true"})
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json["job_id"]  # no scheduler here: it stays queued, so it follows on

    for accept in ("text/plain", "text/event-stream"):
        environ = falcon.testing.create_environ(
            path=f"/jobs/{job_id}/logs", query_string="follow=true", headers={"Accept": accept}
        )
        follower = Call(app, environ)
        assert follower.status.startswith("200"), follower.status
        try:
            # The body is still to be sent, and the one slot is free for everybody else.
            assert client.simulate_get(f"/jobs/{job_id}").status_code == 200
            assert client.simulate_get("/jobs").status_code == 200
        finally:
            follower.body.close()  # the client leaves


def test_a_shed_request_or_an_error_gives_back_what_it_took(app):
    client = falcon.testing.TestClient(app)
    for _ in range(3):  # with one slot, a leak would shed the second of these
        assert client.simulate_get("/jobs/nope").status_code == 404
        assert client.simulate_get("/jobs?limit=zero").status_code == 400
        assert (
            client.simulate_post(
                "/jobs", body=b"{", headers={"Content-Type": "application/json"}
            ).status_code
            == 400
        )
    assert client.simulate_get("/jobs").status_code == 200


def test_a_request_refused_by_a_later_middleware_gives_its_slot_back():
    """As a 401 from the token check does: falcon still calls every `process_response`."""

    class Refuse:
        def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
            raise falcon.HTTPUnauthorized()

    client = falcon.testing.TestClient(falcon.App(middleware=[Admission(1, 0.0), Refuse()]))
    for _ in range(3):  # with one slot and no wait, a leak would shed the second
        assert client.simulate_get("/jobs").status_code == 401


def test_admission_settings_come_from_the_environment():
    defaults = Settings.from_env({})
    assert defaults.api_threads > defaults.api_max_concurrent  # the excess reaches the API
    settings = Settings.from_env(
        {"FREIGHT_API_MAX_CONCURRENT": "8", "FREIGHT_API_ADMISSION_WAIT": "0.5"}
    )
    assert (settings.api_max_concurrent, settings.api_admission_wait) == (8, 0.5)
    assert Settings.from_env({"FREIGHT_API_ADMISSION_WAIT": "0"}).api_admission_wait == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FREIGHT_API_MAX_CONCURRENT", "0"),
        ("FREIGHT_API_MAX_CONCURRENT", "many"),
        ("FREIGHT_API_MAX_CONCURRENT", "1.5"),
        ("FREIGHT_API_ADMISSION_WAIT", "-1"),
        ("FREIGHT_API_ADMISSION_WAIT", "nan"),
        ("FREIGHT_API_ADMISSION_WAIT", "soon"),
    ],
)
def test_bad_admission_settings_are_refused(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
