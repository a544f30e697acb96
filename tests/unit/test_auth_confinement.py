"""What a job's container is allowed, as the runner asks the engine for it (the engine's own
record of it is checked in tests/e2e/test_auth_containment.py)."""

from __future__ import annotations

import pytest

from freight_server.services.runner.executor import KEPT_CAPABILITIES, Confinement, ContainerSpec
from freight_server.shared.config import ConfigError, Settings


def spec(**fields) -> ContainerSpec:
    return ContainerSpec(name="c", image="busybox", command="true", labels={}, **fields)


def test_by_default_a_job_keeps_six_capabilities_and_can_gain_none():
    assert Confinement().host_options() == {
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "KILL"],
        "security_opt": ["no-new-privileges:true"],
        "pids_limit": 4096,
        "privileged": False,
    }
    # Never a bind mount, so never the host's files nor the Docker socket.
    assert not {"binds", "mounts", "volumes_from", "devices"} & set(Confinement().host_options())
    assert "NET_RAW" not in KEPT_CAPABILITIES and "SYS_ADMIN" not in KEPT_CAPABILITIES


def test_a_read_only_root_keeps_tmp_and_the_workdir_writable():
    confinement = Confinement(read_only=True)
    options = confinement.host_options()
    assert options["read_only"] is True
    assert options["tmpfs"] == {"/tmp": "rw,nosuid,nodev"}
    assert confinement.writable_volumes(spec(workdir="/work")) == ["/work"]
    assert Confinement().writable_volumes(spec()) == []


def test_the_default_memory_limit_applies_only_when_the_job_names_none():
    assert Confinement(default_memory_mb=256).limited(spec()).memory_mb == 256
    assert Confinement(default_memory_mb=256).limited(spec(memory_mb=64)).memory_mb == 64
    assert Confinement(default_memory_mb=0).limited(spec()).memory_mb is None


def test_confinement_from_settings():
    settings = Settings.from_env(
        {
            "FREIGHT_JOB_PIDS_LIMIT": "128",
            "FREIGHT_JOB_DEFAULT_MEMORY_MB": "0",
            "FREIGHT_JOB_READ_ONLY": "yes",
        }
    )
    assert Confinement.from_settings(settings) == Confinement(128, 0, True)
    assert Confinement.from_settings(Settings.from_env({})) == Confinement()


@pytest.mark.parametrize(
    "name, value, complaint",
    [
        ("FREIGHT_JOB_READ_ONLY", "maybe", "must be true or false"),
        ("FREIGHT_JOB_PIDS_LIMIT", "3", "at least 16"),
        ("FREIGHT_JOB_NETWORK", "host", "would share another network namespace"),
        ("FREIGHT_JOB_NETWORK", "container:api", "would share another network namespace"),
    ],
)
def test_unsafe_or_malformed_settings_are_refused(name, value, complaint):
    with pytest.raises(ConfigError, match=complaint):
        Settings.from_env({name: value})


def test_security_settings_from_the_environment(tmp_path):
    url_file = tmp_path / "amqp-url"
    url_file.write_text("amqps://freight:pw@broker.internal/freight\n")
    settings = Settings.from_env(
        {
            "FREIGHT_API_TOKENS_FILE": "/etc/freight/tokens",
            "FREIGHT_ALLOWED_IMAGES": "busybox:*, registry.example.com/ml/* ,",
            "FREIGHT_AMQP_URL": "amqp://ignored/",
            "FREIGHT_AMQP_URL_FILE": str(url_file),
            "FREIGHT_JOB_NETWORK": "jobs",
        }
    )
    assert str(settings.api_tokens_file) == "/etc/freight/tokens"
    assert settings.allowed_images == ("busybox:*", "registry.example.com/ml/*")
    assert settings.amqp_url == "amqps://freight:pw@broker.internal/freight"
    assert settings.job_network == "jobs"
    with pytest.raises(ConfigError, match="FREIGHT_AMQP_URL_FILE.*cannot be read"):
        Settings.from_env({"FREIGHT_AMQP_URL_FILE": str(tmp_path / "absent")})
