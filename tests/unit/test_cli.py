"""The `freight` command's own behaviour, without a cluster: its parser, completion scripts,
exit codes, job id prefixes and `login` against a tiny fake API (http.server)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from freight import cli, completion, transfers
from freight.commands import EXIT_FAILED, EXIT_USAGE
from freight.credentials import read_config, write_config
from freight.job_ids import AmbiguousJobId, UnknownJobId, resolve_job_id
from freight.models import Job

GOOD_TOKEN = "frt_good"
JOB_A = "0d6c1111-1111-4111-8111-111111111111"
JOB_B = "0d6c2222-2222-4222-8222-222222222222"
JOB_C = "7f001111-1111-4111-8111-111111111111"


class FakeApi(BaseHTTPRequestHandler):
    """GET /jobs for GOOD_TOKEN only: three jobs, two of them sharing the prefix 0d6c."""

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
            self._answer(401, {"error": "unauthorized", "message": "unknown token"})
        elif self.path.startswith("/jobs/"):
            job_id = self.path.split("/")[2]
            self._answer(200, _job(job_id))
        elif self.path.startswith("/jobs"):
            jobs = [_job(j) for j in (JOB_A, JOB_B, JOB_C)]
            self._answer(200, {"count": 3, "results": jobs, "next": None})
        else:
            self._answer(404, {"error": "not_found", "message": "404 Not Found"})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _job(job_id: str) -> dict[str, object]:
    return {"job_id": job_id, "status": "COMPLETE", "command": "true", "gpus": 0}


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of the test's own, and none of the caller's Freight settings."""
    for name in ("FREIGHT_CONFIG", "XDG_CONFIG_HOME", "FREIGHT_URL", "FREIGHT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


# -- parser ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://h:1", "ls"],
        ["ls", "--url", "http://h:1"],
        ["--url", "http://h:1", "files", "get", "ID", "/job/x"],
        ["files", "get", "ID", "/job/x", "--url", "http://h:1"],
        ["logs", "--url", "http://h:1", "-f", "ID"],
    ],
)
def test_url_is_taken_before_or_after_the_command(argv: list[str]) -> None:
    assert cli.build_parser().parse_args(argv).url == "http://h:1"


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"freight {cli._version()}"


def test_bad_arguments_exit_with_freights_usage_code_not_2() -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["ls", "--no-such-option"])
    assert exited.value.code == EXIT_USAGE


def test_a_download_into_a_missing_directory_is_a_clear_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "missing" / "dir" / "x"
    code = cli.main(
        ["--url", "http://127.0.0.1:9", "files", "get", JOB_A, "/job/x", "-o", str(target)]
    )
    assert code == EXIT_USAGE
    assert capsys.readouterr().err == f"freight: directory {target.parent} does not exist\n"


# -- completion ------------------------------------------------------------------------------


def _complete_in_bash(*words: str) -> list[str]:
    """What bash offers for the last of `words` with the script sourced."""
    script = completion.script(cli.build_parser(), "bash")
    line = " ".join(f"'{w}'" for w in words)
    run = (
        f"{script}\nCOMP_WORDS=(freight {line}); COMP_CWORD={len(words)}; _freight; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", run], capture_output=True, text=True, check=True).stdout
    return out.split()


def test_bash_completion_offers_commands_subcommands_and_their_options() -> None:
    assert {"submit", "login", "completion", "files"} <= set(_complete_in_bash(""))
    assert _complete_in_bash("files", "g") == ["get"]
    assert _complete_in_bash("--url", "http://h", "files", "get", "--r") == ["--recursive"]
    assert "--wait" in _complete_in_bash("submit", "--w")


def test_zsh_and_fish_completion_come_from_the_same_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert zsh.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -o default -F _freight freight" in zsh

    assert cli.main(["completion", "fish"]) == 0
    fish = capsys.readouterr().out
    get = "'__fish_seen_subcommand_from files; and __fish_seen_subcommand_from get'"
    assert f"complete -c freight -n {get} -l recursive" in fish
    files = "'__fish_seen_subcommand_from files; and not __fish_seen_subcommand_from ls get'"
    assert f"complete -c freight -f -n {files} -a get" in fish


# -- job id prefixes -------------------------------------------------------------------------


def _jobs(*ids: str) -> list[Job]:
    return [Job.from_json(_job(i)) for i in ids]


def test_a_unique_prefix_names_its_job_and_a_whole_id_is_taken_as_is() -> None:
    assert resolve_job_id("7f00", _jobs(JOB_A, JOB_C)) == JOB_C
    assert resolve_job_id("0D6C2", _jobs(JOB_A, JOB_B)) == JOB_B
    assert resolve_job_id(JOB_A, []) == JOB_A


def test_an_ambiguous_short_or_unknown_prefix_says_so() -> None:
    with pytest.raises(AmbiguousJobId, match=f"2 jobs start with it:\n  {JOB_A}  COMPLETE\n"):
        resolve_job_id("0d6c", _jobs(JOB_A, JOB_B, JOB_C))
    with pytest.raises(AmbiguousJobId, match="at least 4 characters"):
        resolve_job_id("0d6", _jobs(JOB_A))
    with pytest.raises(UnknownJobId, match="no job of yours"):
        resolve_job_id("abcd", _jobs(JOB_A))
    with pytest.raises(UnknownJobId, match="ids are hexadecimal"):
        resolve_job_id("my-job", _jobs(JOB_A))


def test_the_cli_resolves_prefixes_through_the_api(
    api: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FREIGHT_TOKEN", GOOD_TOKEN)
    assert cli.main(["status", "--json", "--url", api, "7f00"]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == JOB_C

    assert cli.main(["status", "--url", api, "0d6c"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("freight: job id '0d6c' is ambiguous") and JOB_A in err and JOB_B in err

    assert cli.main(["status", "--url", api, "ffff"]) == EXIT_FAILED


# -- login -----------------------------------------------------------------------------------


def test_login_checks_the_token_and_saves_it_mode_0600(
    api: str, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{GOOD_TOKEN}\n"))
    assert cli.main(["login", "--url", api, "--token-stdin"]) == 0

    path = home / ".config" / "freight" / "config"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_config(path) == {"url": api, "token": GOOD_TOKEN}
    assert str(path) in capsys.readouterr().err
    assert os.listdir(path.parent) == ["config"]  # no temporary file left behind


def test_login_with_a_refused_token_writes_nothing(
    api: str, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("frt_wrong\n"))
    assert cli.main(["login", "--url", api, "--token-stdin"]) == EXIT_USAGE
    assert "refused the token: unknown token" in capsys.readouterr().err
    assert not (home / ".config" / "freight" / "config").exists()


def test_the_config_file_is_never_readable_by_others_even_with_a_wide_umask(
    tmp_path: Path,
) -> None:
    path = tmp_path / "freight" / "config"
    old = os.umask(0)
    try:
        write_config(path, {"url": "http://a", "token": "t1"})
        write_config(path, {"url": "http://b", "token": "t2"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_config(path) == {"url": "http://b", "token": "t2"}


# -- directory uploads -----------------------------------------------------------------------


def test_a_directory_upload_keeps_relative_paths_and_follows_file_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("a")
    (root / "sub" / "deeper" / "b.txt").write_text("b")
    (root / "link.txt").symlink_to(root / "a.txt")

    upload = transfers.directory_upload(str(root), "tree")
    assert [dest for _, dest in upload.files] == [
        "tree/a.txt",
        "tree/link.txt",
        "tree/sub/deeper/b.txt",
    ]
    assert upload.empty_dirs == [str(root / "empty")]


@pytest.mark.parametrize("kind", ["dangling", "dir-link", "fifo"])
def test_a_directory_upload_refuses_what_it_cannot_send(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "src"
    root.mkdir()
    (root / "ok.txt").write_text("ok")
    odd = root / "odd"
    if kind == "dangling":
        odd.symlink_to(tmp_path / "nowhere")
    elif kind == "dir-link":
        odd.symlink_to(tmp_path)
    else:
        os.mkfifo(odd)
    with pytest.raises(transfers.TransferError, match=f"^{odd}: "):
        transfers.directory_upload(str(root), "tree")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_directory_upload_refuses_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    (tmp_path / "secret").chmod(0)
    with pytest.raises(transfers.TransferError, match="cannot read it"):
        transfers.directory_upload(str(tmp_path), "tree")
