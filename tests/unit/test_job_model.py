"""The job model (freight/jobspec.py) is the one definition of a job: every field the API accepts
is in the OpenAPI spec, a parameter of the SDK's `Client.submit` and an option of
`freight submit`; every field the API shows is in the spec's Job schema and on the SDK's Job."""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from freight import jobspec
from freight.cli import build_parser
from freight.client import Client
from freight.commands import UsageError, submit_job
from freight.jobspec import Job, JobSpec
from freight.models import Job as SdkJob
from freight.models import Submitted
from freight_server.services.api.jobs import present
from freight_server.services.api.openapi import DOCUMENT
from freight_server.services.api.submission import InvalidRequest, parse_job_request
from freight_server.shared.events import Event, EventType
from freight_server.shared.jobs import JobView, Status, evolve
from tests.routes import wired_app

REQUEST_FIELDS = sorted(JobSpec.model_fields)
RESPONSE_FIELDS = sorted(Job.model_fields)
SUBMISSION_MEDIA = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
# `freight submit`'s name for a field, where it is not --the-field.
CLI_NAMES = {"command": "COMMAND", "labels": "--label"}


def schema(ref_or_schema: dict[str, Any]) -> dict[str, Any]:
    ref = ref_or_schema.get("$ref")
    if ref is None:
        return ref_or_schema
    return DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[1]]


@pytest.fixture(scope="module")
def submit_help() -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["submit"].format_help()


@pytest.mark.parametrize("field", REQUEST_FIELDS)
@pytest.mark.parametrize("media", SUBMISSION_MEDIA)
def test_every_request_field_is_in_the_spec_of_post_jobs(field, media):
    body = DOCUMENT["paths"]["/jobs"]["post"]["requestBody"]["content"][media]["schema"]
    assert field in schema(body)["properties"]


@pytest.mark.parametrize("field", REQUEST_FIELDS)
def test_every_request_field_is_a_parameter_of_client_submit(field):
    assert field in inspect.signature(Client.submit).parameters


@pytest.mark.parametrize("field", REQUEST_FIELDS)
def test_every_request_field_is_an_option_of_freight_submit(field, submit_help):
    assert CLI_NAMES.get(field, f"--{field.replace('_', '-')}") in submit_help


@pytest.mark.parametrize("field", RESPONSE_FIELDS)
def test_every_response_field_is_in_the_spec_and_on_the_sdk_job(field):
    assert field in schema(DOCUMENT["components"]["schemas"]["Job"])["properties"]
    assert field in SdkJob.model_fields


def test_the_api_shows_exactly_the_response_models_fields():
    view = evolve(None, submitted(command="true", name="n", labels={"team": "ml"}))
    assert view is not None
    shown = present(view)
    assert sorted(shown) == RESPONSE_FIELDS
    assert Job.model_validate(shown).labels == {"team": "ml"}


def test_the_model_needs_nothing_of_the_server():
    """A client-only install (the SDK) must be able to import it: pydantic and the stdlib only."""
    tree = ast.parse(Path(jobspec.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - sys.stdlib_module_names - {"__future__"} == {"pydantic", "pydantic_core"}


# -- name and labels -----------------------------------------------------------------------


def submitted(**data: Any) -> Event:
    return Event(
        event_id="e-1",
        type=EventType.JOB_SUBMITTED,
        job_id="j-1",
        occurred_at=datetime(2024, 1, 1, tzinfo=UTC),
        producer="test",
        data={"image": "busybox", **data},
    )


def parse(**fields: Any) -> Any:
    return parse_job_request(
        {k: v if isinstance(v, list) else [v] for k, v in fields.items()}, "busybox:stable"
    )


def test_name_and_labels_travel_from_a_form_to_the_job_view():
    request = parse(command="x", name="nightly eval", labels=["team=ml", "run=7"])
    data = request.event_data()
    assert (data["name"], data["labels"]) == ("nightly eval", {"team": "ml", "run": "7"})
    view = evolve(None, submitted(**data))
    assert view is not None and view.name == "nightly eval" and view.labels["run"] == "7"
    assert present(view)["labels"] == {"team": "ml", "run": "7"}


def test_a_view_stored_before_name_and_labels_still_loads():
    old = evolve(None, submitted(command="x"))
    assert old is not None
    stored = old.to_dict()
    del stored["name"], stored["labels"]
    view = JobView.from_dict(stored)
    assert view.status == Status.QUEUED and view.name is None and view.labels == {}


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"name": "x" * 201}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"labels": "NOEQUALS"}, "labels"),
        ({"labels": {"bad key": "1"}}, "labels"),
        ({"labels": {"k": "v" * 256}}, "labels"),
        ({"labels": [f"k{i}=v" for i in range(65)]}, "labels"),
        ({"gpus": "-1"}, "gpus"),
        ({"memory": "5"}, "memory"),
    ],
)
def test_bad_names_labels_and_bounds_are_refused_by_name(fields, field):
    with pytest.raises(InvalidRequest) as refused:
        parse(command="x", **fields)
    assert refused.value.field == field
    assert "Input should" not in refused.value.message  # our words, not pydantic's


def test_a_bound_is_told_with_its_limit():
    with pytest.raises(InvalidRequest, match="must be at least 6, got 5"):
        parse(command="x", memory="5")


# -- the SDK and the CLI send every field ----------------------------------------------------


class RecordingClient:
    """Stands for Client: keeps what `freight submit` asked of it."""

    def __init__(self) -> None:
        self.submitted: dict[str, Any] = {}

    def submit(self, command: str, **kwargs: Any) -> Submitted:
        self.submitted = {"command": command, **kwargs}
        return Submitted.from_json({"job_id": "j-1", "command": command, "status": "QUEUED"})


def submit_args(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(["submit", *argv])
    args.json = False  # as freight.cli.main leaves it
    return args


def test_freight_submit_passes_every_option_to_the_sdk(tmp_path: Path, capsys):
    env_file = tmp_path / "job.env"
    env_file.write_text("# settings\nSEED=1\n\nMODE=fast # not a comment\nTOKEN=from-file\n")
    args = submit_args(
        ["--name", "eval", "--label", "team=ml", "--label", "run=7"]
        + ["--gpus", "2", "--gpu-memory", "40000", "--cpus", "1.5", "--memory", "2048"]
        + ["--env-file", str(env_file), "--env", "TOKEN=flag", "--secret-env", "KEY=s3"]
        + ["--image", "python:3.12", "--timeout", "60", "--max-attempts", "2", "--", "true"]
    )
    client = RecordingClient()
    assert submit_job(client, args) == 0  # type: ignore[arg-type]
    sent = client.submitted
    assert set(REQUEST_FIELDS) <= set(sent)
    assert sent["labels"] == {"team": "ml", "run": "7"} and sent["name"] == "eval"
    assert (sent["gpus"], sent["gpu_memory"], sent["cpus"], sent["memory"]) == (2, 40000, 1.5, 2048)
    assert sent["env"] == {"SEED": "1", "MODE": "fast # not a comment", "TOKEN": "flag"}
    assert sent["secret_env"] == {"KEY": "s3"}
    assert capsys.readouterr().out.strip() == "j-1"


def test_a_bad_secret_env_is_refused_without_echoing_it():
    args = submit_args(["--secret-env", "s3cr3t", "--", "true"])
    with pytest.raises(UsageError) as refused:
        submit_job(RecordingClient(), args)  # type: ignore[arg-type]
    assert "s3cr3t" not in str(refused.value)


def test_the_sdk_sends_every_field(monkeypatch):
    sent: dict[str, Any] = {}

    def request(self, method, path, **kwargs):  # type: ignore[no-untyped-def]
        sent.update(kwargs["json"])

        class Answer:
            status_code = 201

            def json(self) -> dict[str, Any]:
                return {"job_id": "j-1", "command": "x", "status": "QUEUED"}

        return Answer()

    monkeypatch.setattr(Client, "_request", request)
    values = {
        "name": "n",
        "labels": {"a": "b"},
        "image": "i",
        "gpus": 1,
        "gpu_memory": 2,
        "cpus": 0.5,
        "memory": 64,
        "env": {"A": "1"},
        "secret_env": {"S": "2"},
        "timeout": 9.0,
        "max_attempts": 3,
    }
    Client("http://127.0.0.1:1").submit("x", **values)
    assert sent == {"command": "x", **values}
    JobSpec.model_validate(sent)  # what the SDK sends, the model accepts


# -- /docs -----------------------------------------------------------------------------------


def test_docs_serve_swagger_ui_from_the_package():
    client = falcon.testing.TestClient(wired_app())
    page = client.simulate_get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http" not in page.text  # every asset from this API: no CDN
    for asset in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/docs/freight-docs.js"):
        assert asset in page.text
        served = client.simulate_get(asset)
        assert served.status_code == 200 and len(served.content) > 0, asset
    assert "/openapi.json" in client.simulate_get("/docs/freight-docs.js").text
    assert client.simulate_get("/docs/..%2Fapidocs.py").status_code == 404
    assert json.loads(client.simulate_get("/openapi.json").text)["paths"]["/docs"]
