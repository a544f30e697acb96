"""What a submission may contain; each rejection names the field."""

import pytest

from services.api.submission import InvalidRequest, parse_job_request


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
