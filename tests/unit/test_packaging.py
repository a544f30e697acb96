"""`pip install freight` is the client alone: the SDK and CLI need nothing of the server's
packages, the wheel's only top-level packages are `freight` and `freight_server`, both typed,
and the server's dependencies come with the `server` extra."""

from __future__ import annotations

import email
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from freight.cli import SERVER_PACKAGES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        cwd=out,
    )
    [built] = out.glob("freight-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_freight_and_freight_server_only_both_typed(wheel):
    names = wheel.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"freight", "freight_server"}
    assert {"freight/py.typed", "freight_server/py.typed"} <= set(names)
    # What the services serve from the package, and their migrations, travel with it.
    assert "freight_server/services/api/ui_static/index.html" in names
    assert "freight_server/services/api/migrations/script.py.mako" in names


def test_the_servers_dependencies_are_the_server_extra(wheel):
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    requires = email.message_from_bytes(wheel.read(metadata)).get_all("Requires-Dist")
    plain = {_name(r) for r in requires if ";" not in r}
    assert plain == {"requests", "httpx", "pydantic", "pika"}
    server = {_name(r) for r in requires if 'extra == "server"' in r}
    assert {"falcon", "gunicorn", "sqlalchemy", "alembic", "docker"} <= server


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group()  # type: ignore[union-attr]


def test_the_sdk_and_cli_run_without_the_servers_packages():
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class NoServer(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {set(SERVER_PACKAGES)!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, NoServer())
        import freight, freight.client, freight.aio, freight.jobspec
        from freight.cli import main
        for argv in (["submit", "--help"], ["--version"]):
            try:
                main(argv)
            except SystemExit as exit:
                assert exit.code == 0, (argv, exit.code)
        sys.exit(main(["serve", "api"]))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    assert "pip install 'freight[server]'" in run.stderr
