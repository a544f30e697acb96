"""Secret environment values: sealed by the API, in the log only sealed, shown by name only,
opened by the runner for the container alone. And the image allow-list."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet

from freight_server.services.api.submission import InvalidRequest, parse_job_request
from freight_server.services.runner.executor import ExecutorError
from freight_server.shared.config import ConfigError, Settings
from freight_server.shared.jobs import JobView, Status
from freight_server.shared.secret_env import SecretBox, SecretUnavailable, open_secret_env
from tests.unit.attempts import spec_for
from tests.unit.test_auth import app_for

KEY = Fernet.generate_key().decode()


def parse(allowed=(), **fields):
    return parse_job_request(
        {k: v if isinstance(v, list) else [v] for k, v in fields.items()},
        default_image="busybox:stable",
        allowed_images=allowed,
    )


def test_secret_env_is_read_like_env_and_kept_out_of_the_event():
    request = parse(command="true", env="A=1", secret_env=["TOKEN=s3cr3t", "OTHER=x=y"])
    assert request.secret_env == {"TOKEN": "s3cr3t", "OTHER": "x=y"}
    assert "secret_env" not in request.event_data()
    assert "s3cr3t" not in repr(request)


@pytest.mark.parametrize(
    "value, complaint",
    [
        ("no-equals-sign-s3cr3t", "expected KEY=VALUE"),
        ('{"bad name": "s3cr3t"}', "invalid variable name"),
    ],
)
def test_a_bad_secret_env_is_refused_without_echoing_the_value(value, complaint):
    with pytest.raises(InvalidRequest) as refused:
        parse(command="true", secret_env=value)
    assert refused.value.field == "secret_env" and complaint in refused.value.message
    assert "s3cr3t" not in str(refused.value)


def test_a_name_in_both_env_and_secret_env_is_refused():
    with pytest.raises(InvalidRequest, match="TOKEN is also in env"):
        parse(command="true", env="TOKEN=a", secret_env="TOKEN=b")


def test_sealed_values_open_only_with_the_same_key():
    box = SecretBox(KEY)
    sealed = box.seal({"TOKEN": "s3cr3t"})
    assert "s3cr3t" not in sealed["TOKEN"]
    assert box.open(sealed) == {"TOKEN": "s3cr3t"}
    with pytest.raises(SecretUnavailable, match="another FREIGHT_SECRET_KEY"):
        SecretBox(Fernet.generate_key().decode()).open(sealed)
    with pytest.raises(SecretUnavailable, match="no FREIGHT_SECRET_KEY"):
        open_secret_env(None, sealed)
    assert open_secret_env(None, {}) == {}


def test_a_malformed_key_is_a_config_error():
    with pytest.raises(ConfigError, match="FREIGHT_SECRET_KEY must be 32"):
        SecretBox("not-a-key")


def test_the_api_seals_secrets_and_shows_only_their_names():
    client, log = app_for(Settings(secret_key=KEY))
    created = client.simulate_post(
        "/jobs", json={"command": "true", "secret_env": {"TOKEN": "s3cr3t"}}
    )
    assert created.status_code == 201, created.text
    job_id = created.json["job_id"]
    sealed = log.events[0].data["secret_env"]
    assert "s3cr3t" not in str(log.events[0].to_dict())
    assert SecretBox(KEY).open(sealed) == {"TOKEN": "s3cr3t"}
    assert client.simulate_get(f"/jobs/{job_id}").json["secret_env"] == {"TOKEN": "***"}
    [event] = client.simulate_get(f"/jobs/{job_id}/events").json["events"]
    assert event["data"]["secret_env"] == {"TOKEN": "***"}


def test_without_a_key_secrets_are_refused_not_stored_in_clear():
    client, log = app_for(Settings())
    refused = client.simulate_post("/jobs", json={"command": "true", "secret_env": {"T": "s"}})
    assert refused.status_code == 400
    assert "FREIGHT_SECRET_KEY" in refused.json["message"]
    assert log.events == []


def test_the_runner_opens_secrets_for_the_container_only():
    sealed = SecretBox(KEY).seal({"TOKEN": "s3cr3t"})
    job = JobView(
        job_id=str(uuid.uuid4()),
        status=Status.PENDING,
        command="true",
        image="busybox",
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
        env={"PLAIN": "1"},
        secret_env=sealed,
        attempt=1,
    )
    assert spec_for(job, secrets=SecretBox(KEY)).env == {"PLAIN": "1", "TOKEN": "s3cr3t"}
    # A runner that cannot open them fails the attempt as Freight's error, naming why.
    with pytest.raises(ExecutorError, match="no FREIGHT_SECRET_KEY"):
        spec_for(job, secrets=None)


@pytest.mark.parametrize(
    "image, allowed",
    [
        ("busybox:stable", True),
        ("registry.example.com/team/train:v3", True),
        ("python:3.12", False),
        ("registry.example.com/other/train:v3", False),
    ],
)
def test_only_allowed_images_are_accepted(image, allowed):
    patterns = ("busybox:*", "registry.example.com/team/*")
    if allowed:
        assert parse(command="true", image=image, allowed=patterns).image == image
    else:
        with pytest.raises(InvalidRequest, match="busybox:\\*, registry.example.com/team/\\*"):
            parse(command="true", image=image, allowed=patterns)


def test_the_default_image_is_held_to_the_list_too():
    with pytest.raises(InvalidRequest, match="'busybox:stable' is not allowed"):
        parse(command="true", allowed=("python:*",))
