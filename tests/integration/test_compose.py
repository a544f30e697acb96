"""compose.yaml, its override files and the Dockerfile: valid, and shaped as docs/deploy.md says.

Validity is compose's own `config` check where a compose tool is installed (`docker compose`, or
Debian's docker-compose 1.29, which `make images` installs), and always the files interpolated
with their defaults as compose does, checked against the Compose Specification's JSON schema as
vendored by the `check-jsonschema` package. The image is built where its base image is on the
machine (the official one, or `make images`'s); nothing is ever pulled from a registry here.
tests/deploy/test_compose_stack.py runs the stack itself.
"""

from __future__ import annotations

import importlib.resources
import json
import platform
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"


def debian_suite() -> str:
    """This host's Debian release, which `make images` builds from."""
    try:
        return platform.freedesktop_os_release().get("VERSION_CODENAME") or "bookworm"
    except OSError:
        return "bookworm"


# What `make images` builds in its place (scripts/build-images.sh): Debian's Python, and a build
# stage that brings the wheels of requirements.lock.
LOCAL_BASE_IMAGES = (f"freight/python:{debian_suite()}", f"freight/python-build:{debian_suite()}")
FREIGHT_SERVICES = ("migrate", "filestore", "api", "scheduler", "runner")
# Fixed inside the container by the image and its mounts (the published port is
# FREIGHT_API_PORT; the host's tokens file is FREIGHT_TOKENS_PATH).
CONTAINER_CONSTANTS = {"FREIGHT_API_BIND", "FREIGHT_API_TOKENS_FILE"}
# compose.runner.yaml asks for these (`${VAR:?why}`); a runner on another host has no default.
RUNNER_HOST_ENV = {"FREIGHT_AMQP_URL": "amqp://u:p@broker:5672/", "FREIGHT_RUNNER_ID": "gpu-7"}


# -- loading as compose does ----------------------------------------------------------------


def load(name: str) -> Any:
    # A plain YAML loader, as docker-compose 1.29's: compose v2's tags (`!reset`, `!override`)
    # would fail here as they fail there.
    return yaml.safe_load((ROOT / name).read_text())


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """compose's variable substitution: `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
    `${VAR:?error}`, `${VAR:+alternative}`, `$VAR`, and `$$` for a literal `$`."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        op, arg = match["op"] or "", interpolate(match["arg"] or "", env)
        current = env.get(name)
        unset_or_empty = not current if op.startswith(":") else current is None
        if op.endswith("-"):
            return arg if unset_or_empty else str(current)
        if op.endswith("?"):
            if unset_or_empty:
                raise ValueError(f"compose would refuse: {name} is required ({arg})")
            return str(current)
        if op.endswith("+"):
            return "" if unset_or_empty else arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def merge(base: Any, override: Any) -> Any:
    """Override files as compose merges them: mappings merge, others replace."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: merge(base.get(key), override.get(key)) for key in base | override}
    return base if override is None else override


def project(*files: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in files:
        merged = merge(merged, load(name))
    return interpolate(merged, env or {})


def schema_errors(document: dict[str, Any]) -> list[str]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


PROJECTS = {
    "cpu host": ("compose.yaml",),
    "gpu host": ("compose.yaml", "compose.gpu.yaml"),
    "one more runner": ("compose.runner.yaml",),
    "one more gpu runner": ("compose.runner.yaml", "compose.gpu.yaml"),
}
COMPOSE_FILES = sorted({name for files in PROJECTS.values() for name in files})


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return project("compose.yaml")


# -- validity -------------------------------------------------------------------------------


def compose_tool() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True)
        if probe.returncode == 0 and "compose" in probe.stdout.lower():
            return command
    return None


@pytest.mark.parametrize("files", PROJECTS.values(), ids=PROJECTS.keys())
def test_compose_files_are_valid_by_the_compose_specification(files):
    document = project(*files, env=RUNNER_HOST_ENV)
    assert schema_errors(document) == []


@pytest.mark.parametrize("files", PROJECTS.values(), ids=PROJECTS.keys())
def test_compose_files_pass_compose_own_config_check(files):
    tool = compose_tool()
    if tool is None:
        pytest.skip("no compose tool here (`docker compose`); the schema check above stands in")
    arguments = [part for name in files for part in ("-f", str(ROOT / name))]
    result = subprocess.run(
        [*tool, *arguments, "config", "--quiet"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **RUNNER_HOST_ENV},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_use_nothing_docker_compose_1_29_lacks(name):
    """Debian's docker-compose (1.29) reads these files too: no compose v2 tags or `include`."""

    def tags(node: yaml.Node) -> Iterator[str]:
        yield node.tag
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                yield from tags(key)
                yield from tags(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                yield from tags(item)

    document = yaml.compose((ROOT / name).read_text(), Loader=yaml.SafeLoader)
    assert [tag for tag in tags(document) if tag.startswith("!")] == [], name
    assert "include" not in load(name), f"{name}: `include` is compose v2's"


def test_the_schema_check_catches_what_compose_would_refuse():
    broken = project("compose.yaml")
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["runner"]["volumes"] = "/var/run/docker.sock"
    errors = schema_errors(broken)
    assert any(e.startswith("services/api/depends_on") for e in errors), errors
    assert any(e.startswith("services/runner") for e in errors), errors
    with pytest.raises(ValueError, match="FREIGHT_RUNNER_ID is required"):
        project("compose.runner.yaml", env={"FREIGHT_AMQP_URL": "amqp://broker/"})


# -- shape ----------------------------------------------------------------------------------


def test_one_image_for_every_freight_service(compose):
    services = compose["services"]
    assert {"rabbitmq", "postgres", *FREIGHT_SERVICES} <= set(services)
    assert {services[s]["image"] for s in FREIGHT_SERVICES} == {"freight:local"}
    assert {services[s]["build"] for s in FREIGHT_SERVICES} == {"."}
    assert services["api"]["command"] == ["serve", "api"]
    assert services["migrate"]["command"][0] == "migrate"


def test_services_wait_for_the_migration_and_healthy_dependencies(compose):
    services = compose["services"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "scheduler", "filestore"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["rabbitmq"]["condition"] == "service_healthy", name
    assert services["runner"]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    for name in ("rabbitmq", "postgres", "api", "scheduler", "runner"):
        assert services[name]["healthcheck"]["test"], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)


def test_runner_mounts_the_docker_socket_and_reserves_gpus_with_the_gpu_override(compose):
    runner = compose["services"]["runner"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in runner["volumes"]
    assert "deploy" not in runner
    for files in (
        ("compose.yaml", "compose.gpu.yaml"),
        ("compose.runner.yaml", "compose.gpu.yaml"),
    ):
        gpu = project(*files, env=RUNNER_HOST_ENV)["services"]["runner"]
        devices = gpu["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], files
        assert "/var/run/docker.sock:/var/run/docker.sock" in gpu["volumes"], files


def test_runner_keeps_its_own_database_and_the_others_share_postgres(compose):
    env = {name: s.get("environment", {}) for name, s in compose["services"].items()}
    assert env["runner"]["FREIGHT_RUNNER_DATABASE_URL"].startswith("sqlite:////var/lib/freight/")
    assert env["api"]["FREIGHT_DATABASE_URL"].startswith("postgresql+psycopg://freight:")
    assert env["api"]["FREIGHT_DATABASE_URL"] == env["scheduler"]["FREIGHT_DATABASE_URL"]


def test_filestore_keeps_its_blobs_in_a_named_volume(compose):
    volume, _, path = compose["services"]["filestore"]["volumes"][0].partition(":")
    assert volume in compose["volumes"] and path == "/var/lib/freight"


def test_every_setting_comes_from_the_environment_with_a_default():
    raw = load("compose.yaml")
    for name, service in raw["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if variable in CONTAINER_CONSTANTS:
                continue
            assert "${" in str(value), f"{name}: {variable}={value!r} cannot be set"
    overridden = project("compose.yaml", env={"FREIGHT_API_PORT": "8080", "FREIGHT_RUNNER_ID": "x"})
    assert overridden["services"]["api"]["ports"] == ["0.0.0.0:8080:5000"]
    local = project("compose.yaml", env={"FREIGHT_PUBLISH_ADDRESS": "127.0.0.1"})
    for service in ("api", "rabbitmq"):
        assert all(p.startswith("127.0.0.1:") for p in local["services"][service]["ports"])
    assert overridden["services"]["runner"]["environment"]["FREIGHT_RUNNER_ID"] == "x"


# -- the image ------------------------------------------------------------------------------


def test_dockerfile_pins_its_dependencies_and_runs_freight():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG PYTHON_IMAGE={BASE_IMAGE}" in dockerfile
    assert "ARG BUILD_IMAGE=${PYTHON_IMAGE}" in dockerfile
    assert "pip install -r /src/requirements.lock" in dockerfile
    assert 'ENTRYPOINT ["freight"]' in dockerfile
    assert re.search(r"^USER freight$", dockerfile, re.MULTILINE)


def test_requirements_lock_pins_every_runtime_dependency():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line)
            (version,) = [s.version for s in requirement.specifier if s.operator == "=="]
            pins[requirement.name.lower()] = version
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for dependency in pyproject["project"]["dependencies"]:
        wanted = Requirement(dependency)
        assert wanted.name.lower() in pins, f"{wanted.name} is not in requirements.lock"
        assert wanted.specifier.contains(pins[wanted.name.lower()]), (
            f"requirements.lock pins {wanted.name}=={pins[wanted.name.lower()]}, "
            f"pyproject.toml wants {wanted.specifier}: `make lock`"
        )


@pytest.mark.docker
def test_the_image_builds_and_runs_freight():
    if shutil.which("docker") is None:
        pytest.skip("no docker command here")

    def present(image: str) -> bool:
        return (
            subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
            == 0
        )

    if present(BASE_IMAGE):
        build_args: list[str] = []
    elif all(map(present, LOCAL_BASE_IMAGES)):
        python, python_build = LOCAL_BASE_IMAGES
        build_args = [
            "--build-arg",
            f"PYTHON_IMAGE={python}",
            "--build-arg",
            f"BUILD_IMAGE={python_build}",
        ]
    else:
        pytest.skip(
            f"neither the base image {BASE_IMAGE} nor `make images`'s {LOCAL_BASE_IMAGES[0]} is "
            f"on this machine: `docker pull {BASE_IMAGE}` or `make images`"
        )
    tag = "freight:compose-test"
    build = subprocess.run(
        ["docker", "build", "--pull=false", *build_args, "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    try:
        run = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", tag, "serve", "--help"],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0 and "api" in run.stdout, run.stderr
        user = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Config.User}}", tag],
            capture_output=True,
            text=True,
        )
        assert user.stdout.strip() == "freight"
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)
