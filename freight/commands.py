"""The user's commands (`freight submit`, `ls`, `logs`...), built on the SDK. Each takes the
parsed arguments and returns the process's exit code (see EXIT_* and docs/client.md)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from freight import render, transfers
from freight.client import Client
from freight.errors import WaitTimedOut
from freight.jobspec import JobSpec
from freight.models import Job
from freight.progress import ProgressBar, Spinner

# `submit --wait` and `wait` exit with the job's own exit code, so Freight's codes sit where a
# job's seldom do: above 250, clear of the shell's 126/127 and of 128+N (killed by signal N:
# 137 out of memory, 143 cancelled while running). Ctrl-C keeps the shell's 130.
EXIT_OK = 0
EXIT_INTERRUPTED = 130  # Ctrl-C; the job goes on
EXIT_NO_EXIT_CODE = 251  # the job failed before its command ran (cancelled while queued...)
EXIT_WAIT_TIMED_OUT = 252  # `wait --timeout` ran out; the job goes on
EXIT_FAILED = 253  # the API refused the request (an unknown job, one that already ended...)
EXIT_USAGE = 254  # bad arguments, a local file missing or unreadable, an ambiguous job id
EXIT_UNREACHABLE = 255  # no answer from Freight, or up but unavailable (503): retry; as ssh's

Command = Callable[[Client, argparse.Namespace], int]


class UsageError(Exception):
    """Arguments that parse but make no sense (a missing local file, a bad KEY=VALUE)."""


class FreightArgumentParser(argparse.ArgumentParser):
    """Exits EXIT_USAGE on bad arguments, not argparse's 2, which a job may well exit with."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_user_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """The `freight` subcommands for people who submit jobs; `common` brings --json."""

    def add(name: str, run: Command, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=help, parents=[common]
        )
        parser.set_defaults(run=run)
        return parser

    submit = add("submit", submit_job, "submit a job: freight submit [options] -- COMMAND...")
    _add_job_spec_options(submit)
    submit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="the same KEY within 24 h answers with the job it first made, never a second one "
        "(default: a new random key, so only this command's own retries are safe)",
    )
    submit.add_argument(
        "--wait", action="store_true", help="wait for the end; exit with the job's exit code"
    )
    submit.add_argument(
        "--follow", action="store_true", help="print the output as it runs, then as --wait"
    )
    submit.add_argument(
        "words",
        nargs="+",
        metavar="COMMAND",
        help="one argument is a shell command line; several are quoted as one command",
    )

    ls = add("ls", list_jobs, "list jobs, newest first (unfinished ones unless --all/--status)")
    ls.add_argument("--all", action="store_true", help="every job, finished ones too")
    ls.add_argument(
        "--status", action="append", default=[], metavar="S", help="e.g. RUNNING or FAILED,COMPLETE"
    )

    add("status", show_job, "show one job").add_argument("job_id", metavar="ID")

    logs = add("logs", show_logs, "print a job's output")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    logs.add_argument("--stream", choices=("stdout", "stderr"), help="only this stream")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    logs.add_argument("job_id", metavar="ID")

    add("cancel", cancel_job, "stop a job").add_argument("job_id", metavar="ID")
    add("events", show_events, "a job's history, from the event log").add_argument(
        "job_id", metavar="ID"
    )

    usage = add("usage", show_usage, "what each owner's ended jobs used (GPU- and CPU-hours)")
    usage.add_argument("--owner", metavar="NAME", help="only NAME's (an admin may ask anyone's)")

    wait = add("wait", wait_for_job, "wait for a job to end; exit with its exit code")
    wait.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    wait.add_argument("job_id", metavar="ID")

    files = commands.add_parser("files", help="a job's files", description="a job's files")
    actions = files.add_subparsers(dest="files_command", required=True, metavar="{ls,get}")
    files_ls = actions.add_parser(
        "ls", help="list a directory of the job", parents=[common], description="list a directory"
    )
    files_ls.set_defaults(run=list_files)
    files_ls.add_argument("job_id", metavar="ID")
    files_ls.add_argument("path", metavar="PATH", nargs="?", default="/job")
    files_get = actions.add_parser(
        "get",
        help="download a file (or with -r a directory) of the job",
        parents=[common],
        description="download a file, or with -r a directory and everything under it",
    )
    files_get.set_defaults(run=get_file)
    files_get.add_argument("-r", "--recursive", action="store_true", help="PATH is a directory")
    files_get.add_argument("job_id", metavar="ID")
    files_get.add_argument("path", metavar="PATH")
    files_get.add_argument(
        "-o", "--output", metavar="LOCAL", help="where to save it (default: its name; - = stdout)"
    )


def _add_job_spec_options(submit: argparse.ArgumentParser) -> None:
    """An option for every field of the job model but `command` (the words after --), its help
    the model's own description (tests/unit/test_job_model.py checks none is missing)."""

    def option(field: str, flag: str | None = None, **kwargs: Any) -> None:
        help = JobSpec.model_fields[field].description or ""
        flag = flag or f"--{field.replace('_', '-')}"
        submit.add_argument(flag, dest=field, help=help, **kwargs)

    def pairs(field: str, flag: str | None = None) -> None:
        option(field, flag, action="append", default=[], metavar="K=V")

    option("name", metavar="NAME")
    pairs("labels", "--label")
    option("image", metavar="IMAGE")
    option("gpus", type=int, metavar="N")
    option("gpu_memory", type=int, metavar="MIB")
    option("cpus", type=float, metavar="N")
    option("memory", type=int, metavar="MIB")
    pairs("env")
    submit.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="environment variables from FILE: KEY=VALUE lines, # comments, no quotes removed "
        "(as `docker run --env-file`); --env wins over it",
    )
    pairs("secret_env")
    option("timeout", type=float, metavar="S")
    option("max_attempts", type=int, metavar="N")
    option("priority", type=int, metavar="N")
    submit.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="LOCAL[:DEST]",
        help="upload LOCAL, a file or a directory, to DEST in the job (default: its name, "
        "under /job); a directory's files keep their paths under DEST",
    )


# -- commands --------------------------------------------------------------------------------


def submit_job(client: Client, args: argparse.Namespace) -> int:
    uploads = [upload for spec in args.file for upload in _uploads(spec)]
    env = {**_env_files(args.env_file), **_pairs("--env", args.env)}
    bar = ProgressBar("uploading", _total_size(uploads)) if uploads else None
    submitted = client.submit(
        _command_line(args.words),
        name=args.name,
        labels=_pairs("--label", args.labels),
        image=args.image,
        gpus=args.gpus,
        gpu_memory=args.gpu_memory,
        cpus=args.cpus,
        memory=args.memory,
        env=env,
        secret_env=_pairs("--secret-env", args.secret_env),
        timeout=args.timeout,
        max_attempts=args.max_attempts,
        priority=args.priority,
        files=uploads,
        on_upload=bar.show if bar else None,
        idempotency_key=args.idempotency_key,
    )
    if bar:
        bar.close()
    job_id = args.job_id = submitted.job_id  # for the Ctrl-C message
    if args.follow:
        _note(f"job {job_id} submitted")
        if args.json:
            _print_json(submitted.raw)
        _print_log_lines(client, job_id, None, None, args.json)
    elif not (args.wait and args.json):
        if args.json:
            _print_json(submitted.raw)
        else:
            print(job_id, flush=True)
    if not (args.wait or args.follow):
        return EXIT_OK
    return _finish(client, job_id, None, args.json)


def list_jobs(client: Client, args: argparse.Namespace) -> int:
    statuses = [s.strip().upper() for value in args.status for s in value.split(",") if s.strip()]
    jobs = client.list("all" if args.all else statuses or None)
    if args.json:
        _print_json([j.raw for j in jobs])
    else:
        print(render.jobs_table(jobs))
    return EXIT_OK


def show_usage(client: Client, args: argparse.Namespace) -> int:
    rows = client.usage(args.owner)
    if args.json:
        _print_json(rows)
    else:
        print(render.usage_table(rows))
    return EXIT_OK


def show_job(client: Client, args: argparse.Namespace) -> int:
    job = client.get(args.job_id)
    print(json.dumps(job.raw) if args.json else render.job_details(job))
    return EXIT_OK


def show_logs(client: Client, args: argparse.Namespace) -> int:
    if args.json or args.follow:
        # Following goes line by line so that each line shows as soon as it is whole.
        _print_log_lines(client, args.job_id, args.stream, args.tail, args.json, args.follow)
        return EXIT_OK
    out = sys.stdout.buffer
    for chunk in client.log_stream(args.job_id, stream=args.stream, tail=args.tail):
        out.write(chunk)
    out.flush()
    return EXIT_OK


def cancel_job(client: Client, args: argparse.Namespace) -> int:
    cancelled = client.cancel(args.job_id)
    print(json.dumps(dict(cancelled.raw)) if args.json else cancelled.message)
    return EXIT_OK


def show_events(client: Client, args: argparse.Namespace) -> int:
    events = client.events(args.job_id)
    if args.json:
        _print_json([e.raw for e in events])
    else:
        print(render.events_table(events))
    return EXIT_OK


def wait_for_job(client: Client, args: argparse.Namespace) -> int:
    return _finish(client, args.job_id, args.timeout, args.json)


def list_files(client: Client, args: argparse.Namespace) -> int:
    entries = client.files_ls(args.job_id, args.path)
    if args.json:
        _print_json([e.raw for e in entries])
    else:
        print(render.files_table(entries))
    return EXIT_OK


def get_file(client: Client, args: argparse.Namespace) -> int:
    name = os.path.basename(args.path.rstrip("/")) or "download"
    if args.recursive:
        return get_directory(client, args, name)
    if args.output == "-":
        written = client.files_get(args.job_id, args.path, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return EXIT_OK
    local = _local_target(args.output or name, name)
    with ProgressBar(f"downloading {name}", None) as bar:
        written = client.files_get(args.job_id, args.path, local, on_download=bar.show)
    if args.json:
        saved = {"job_id": args.job_id, "path": args.path, "local": str(local), "size": written}
        _print_json(saved)
    else:
        _note(f"saved {args.path} to {local} ({written} bytes)")
    return EXIT_OK


def get_directory(client: Client, args: argparse.Namespace, name: str) -> int:
    """`files get -r`: the job's directory PATH and everything under it, as `cp -r` would."""
    if args.output == "-":
        raise UsageError("files get -r writes a directory: -o - (stdout) cannot take one")
    local = _local_target(args.output or name, name)
    tree = transfers.remote_tree(client, args.job_id, args.path)
    with ProgressBar(f"downloading {name}/", tree.size) as bar:
        try:
            saved = list(
                transfers.download_tree(client, args.job_id, args.path, tree, local, bar.show)
            )
        except transfers.TransferError as exc:
            raise UsageError(str(exc)) from None
    for entry in tree.others:
        _note(f"freight: skipped {entry.path}: a {entry.type}, not a file")
    if args.json:
        _print_json(
            {
                "job_id": args.job_id,
                "path": args.path,
                "local": str(local),
                "files": len(saved),
                "symlinks": len(tree.symlinks),
                "size": tree.size,
            }
        )
    else:
        links = f", {len(tree.symlinks)} symlinks" if tree.symlinks else ""
        _note(f"saved {args.path} to {local} ({len(saved)} files{links}, {tree.size} bytes)")
    return EXIT_OK


# -- helpers ---------------------------------------------------------------------------------


def _local_target(given: str, name: str) -> Path:
    """Where a download goes: `given`, or `given`/`name` when it is a directory; its parent
    must exist (a typo in -o is an error, not a new tree of directories)."""
    local = Path(given).expanduser()
    if local.is_dir():
        return local / name
    parent = local.parent
    if not parent.is_dir():
        raise UsageError(f"directory {parent} does not exist")
    return local


def _finish(client: Client, job_id: str, timeout: float | None, as_json: bool) -> int:
    """Wait for the end with a spinner; the exit code is the job's."""
    with Spinner(f"job {job_id}") as spinner:

        def show(job: Job) -> None:
            spinner.text = f"job {job_id} {job.status}"

        try:
            job = client.wait(job_id, timeout=timeout, on_status=show)
        except WaitTimedOut as exc:
            _note(f"freight: {exc}")
            return EXIT_WAIT_TIMED_OUT
    if as_json:
        _print_json(job.raw)
    else:
        print(render.final_line(job), file=sys.stderr)
    return job_exit_code(job)


def job_exit_code(job: Job) -> int:
    if job.status == "COMPLETE":
        return EXIT_OK
    if job.exit_code is not None and job.exit_code != 0:
        return job.exit_code & 0xFF
    return EXIT_NO_EXIT_CODE


def _print_log_lines(
    client: Client,
    job_id: str,
    stream: str | None,
    tail: int | None,
    as_json: bool,
    follow: bool = True,
) -> None:
    lines = (
        client.follow(job_id, stream=stream, tail=tail)
        if follow
        else client.logs(job_id, stream=stream, tail=tail).splitlines()
    )
    for line in lines:
        print(json.dumps({"job_id": job_id, "line": line}) if as_json else line, flush=True)


def _command_line(words: list[str]) -> str:
    """One word is taken as a shell command line as is ('make && ./run > log'); several are
    quoted so that the job runs exactly that argv (python -c 'print(1)')."""
    return words[0] if len(words) == 1 else shlex.join(words)


def _uploads(spec: str) -> list[tuple[str, str]]:
    """LOCAL[:DEST] -> [(local, dest)]; a local name that exists is taken whole, colons and
    all. A directory gives one upload per file beneath it (freight/transfers.py)."""
    local, dest = (spec, "") if os.path.exists(spec) else spec.partition(":")[::2]
    if not os.path.exists(local):
        raise UsageError(f"--file {spec}: no such file {local!r}")
    dest = dest or os.path.basename(os.path.abspath(local))
    if not os.path.isdir(local):
        return [(local, dest)]
    try:
        directory = transfers.directory_upload(local, dest)
    except transfers.TransferError as exc:
        raise UsageError(f"--file {spec}: {exc}") from None
    for empty in directory.empty_dirs:
        _note(f"freight: --file {spec}: {empty} is empty; the job gets no directory for it")
    return directory.files


def _pairs(option: str, given: list[str]) -> dict[str, str]:
    return dict(_pair(option, text) for text in given)


def _pair(option: str, text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        # Never the text itself: under --secret-env it holds a secret.
        raise UsageError(f"{option} {name if sep else '...'!r}: expected NAME=VALUE")
    return name, value


def _env_files(paths: list[str]) -> dict[str, str]:
    """KEY=VALUE lines, blank lines and `# comments` skipped; later files win."""
    env: dict[str, str] = {}
    for path in paths:
        try:
            lines = Path(path).expanduser().read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--env-file {path}: cannot read it ({exc})") from None
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                env.update([_pair(f"--env-file {path}, line {number}:", line.strip())])
    return env


def _total_size(uploads: list[tuple[str, str]]) -> int:
    return sum(os.path.getsize(local) for local, _ in uploads)


def _print_json(value: Any) -> None:
    """One document per line: a single answer parses as JSON, a stream as JSON Lines."""
    print(json.dumps(value), flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
