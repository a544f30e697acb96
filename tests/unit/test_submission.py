"""What a submission may contain; each rejection names the field."""

import pytest

from freight_server.services.api.submission import (
    MAX_TIMEOUT_SECONDS,
    InvalidRequest,
    parse_job_request,
)


def parse(**fields):
    return parse_job_request(
        {k: v if isinstance(v, list) else [v] for k, v in fields.items()},
        default_image="busybox:stable",
    )


def test_defaults():
    request = parse(command="ls -al /tmp")
    assert request.command == "ls -al /tmp"
    assert request.image == "busybox:stable" and request.gpus is None
    assert request.env == {} and request.timeout is None and request.max_attempts == 1


def test_form_strings_are_converted():
    request = parse(command="x", gpus="2", timeout="1.5", max_attempts="3", env=["A=1", "B=two=2"])
    assert (request.gpus, request.timeout, request.max_attempts) == (2, 1.5, 3)
    assert request.env == {"A": "1", "B": "two=2"}


def test_env_as_object_or_json_text():
    assert parse(command="x", env={"A": "1"}).env == {"A": "1"}
    assert parse(command="x", env='{"A": "1"}').env == {"A": "1"}


@pytest.mark.parametrize(
    "fields, field",
    [
        ({}, "command"),
        ({"command": ""}, "command"),
        ({"command": "   "}, "command"),
        ({"command": 5}, "command"),
        ({"command": "a\x00b"}, "command"),
        ({"command": "x", "gpus": "-1"}, "gpus"),
        ({"command": "x", "gpus": "two"}, "gpus"),
        ({"command": "x", "gpus": 1.5}, "gpus"),
        ({"command": "x", "gpus": True}, "gpus"),
        ({"command": "x", "timeout": "0"}, "timeout"),
        ({"command": "x", "timeout": "nan"}, "timeout"),
        ({"command": "x", "timeout": "soon"}, "timeout"),
        ({"command": "x", "env": "NOEQUALS"}, "env"),
        ({"command": "x", "env": "1BAD=x"}, "env"),
        ({"command": "x", "env": {"A": 1}}, "env"),
        ({"command": "x", "env": "{not json"}, "env"),
        ({"command": "x", "image": "has space"}, "image"),
        ({"command": "x", "max_attempts": "0"}, "max_attempts"),
        ({"command": "x", "bogus": "1"}, "bogus"),
        ({"command": ["a", "b"]}, "command"),
    ],
)
def test_bad_fields_are_rejected_by_name(fields, field):
    with pytest.raises(InvalidRequest) as info:
        parse(**fields)
    assert info.value.field == field


@pytest.mark.parametrize(
    "timeout",
    ["nan", float("nan"), "inf", float("inf"), "-inf", -1, "-0.5", 0, "0.0", 2_592_001, 1e308],
)
def test_absurd_timeouts_are_rejected(timeout):
    with pytest.raises(InvalidRequest) as info:
        parse(command="x", timeout=timeout)
    assert info.value.field == "timeout"
    assert "2592000" in info.value.message


@pytest.mark.parametrize("timeout", [0.001, 1, "90", MAX_TIMEOUT_SECONDS])
def test_timeouts_up_to_thirty_days_are_accepted(timeout):
    assert parse(command="x", timeout=timeout).timeout == float(timeout)


def test_resources_from_a_form_or_json():
    request = parse(command="x", gpus="2", gpu_memory="40000", cpus="1.5", memory="2048")
    assert (request.gpu_memory, request.cpus, request.memory) == (40000, 1.5, 2048)
    data = parse(command="x", cpus=2, memory=64).event_data()
    assert (data["cpus"], data["memory"]) == (2.0, 64)
    assert parse(command="x").event_data()["cpus"] is None


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"cpus": "0"}, "cpus"),
        ({"cpus": "-1"}, "cpus"),
        ({"cpus": "0.001"}, "cpus"),
        ({"cpus": "inf"}, "cpus"),
        ({"cpus": "many"}, "cpus"),
        ({"cpus": True}, "cpus"),
        ({"memory": "5"}, "memory"),
        ({"memory": "1.5"}, "memory"),
        ({"memory": "lots"}, "memory"),
        ({"memory": str(1 << 40)}, "memory"),
        ({"gpus": "1", "gpu_memory": "0"}, "gpu_memory"),
        ({"gpu_memory": "1000"}, "gpu_memory"),
        ({"gpus": "0", "gpu_memory": "1000"}, "gpu_memory"),
    ],
)
def test_bad_resources_are_rejected_by_name(fields, field):
    with pytest.raises(InvalidRequest) as info:
        parse(command="x", **fields)
    assert info.value.field == field
