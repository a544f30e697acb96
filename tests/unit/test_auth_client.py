"""Where the CLI and SDK find a token: FREIGHT_TOKEN, else a config file only its owner reads."""

from __future__ import annotations

import pytest

from freight.client import Client
from freight.credentials import Credentials, config_path
from freight.errors import FreightError


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "freight" / "config"
    path.parent.mkdir()
    path.write_text("# mine\nurl = http://freight.example:5000\ntoken = frt_from_file\n")
    path.chmod(0o600)
    return path


def test_the_config_file_lies_in_the_users_config_directory(tmp_path):
    assert config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "freight" / "config"
    assert config_path({"FREIGHT_CONFIG": "/etc/f"}).as_posix() == "/etc/f"


def test_arguments_then_environment_then_the_file(config):
    env = {"FREIGHT_CONFIG": str(config)}
    found = Credentials(None, None, env)
    assert (found.url, found.token) == ("http://freight.example:5000", "frt_from_file")
    found = Credentials(None, None, {**env, "FREIGHT_TOKEN": "frt_env"})
    assert found.token == "frt_env"
    assert Credentials("http://x", "frt_arg", env).token == "frt_arg"


def test_a_config_file_others_may_read_is_refused(config):
    config.chmod(0o640)
    with pytest.raises(FreightError, match=f"mode 0640.*chmod 600 {config}"):
        Credentials(None, None, {"FREIGHT_CONFIG": str(config)})
    # Not even looked at when the environment already says everything.
    env = {"FREIGHT_CONFIG": str(config), "FREIGHT_URL": "http://x", "FREIGHT_TOKEN": "t"}
    assert Credentials(None, None, env).token == "t"


def test_a_malformed_config_file_names_its_line(config):
    config.write_text("url = http://x\npassword = hunter2\n")
    with pytest.raises(FreightError, match="line 2: expected"):
        Credentials(None, None, {"FREIGHT_CONFIG": str(config)})


def test_the_client_sends_the_token_it_found(config, monkeypatch):
    monkeypatch.delenv("FREIGHT_TOKEN", raising=False)
    monkeypatch.delenv("FREIGHT_URL", raising=False)
    monkeypatch.setenv("FREIGHT_CONFIG", str(config))
    with Client() as client:
        assert client.url == "http://freight.example:5000"
        assert client._session.headers["Authorization"] == "Bearer frt_from_file"
    monkeypatch.setenv("FREIGHT_CONFIG", str(config.parent / "absent"))
    with Client() as client:
        assert "Authorization" not in client._session.headers
