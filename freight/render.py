"""How the CLI shows jobs, events and files to people (--json gives scripts the API's JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from freight.models import Event, FileEntry, Job
from freight.progress import human_bytes

COMMAND_WIDTH = 48


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def short(text: str, width: int = COMMAND_WIDTH) -> str:
    """On one line, cut to `width` (--json shows it all)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def outcome(job: Job) -> str:
    """What a person wants to know about an ended job in a few words."""
    if job.status == "COMPLETE":
        return "exit 0"
    if job.status == "FAILED":
        return job.reason or (f"exit {job.exit_code}" if job.exit_code is not None else "failed")
    return ""


def jobs_table(jobs: Iterable[Job]) -> str:
    return table(
        ["JOB ID", "STATUS", "CREATED", "GPUS", "RESULT", "COMMAND"],
        (
            [
                j.job_id,
                j.status,
                when(j.created_at),
                "-" if j.gpus is None else str(j.gpus),
                outcome(j) or "-",
                short(j.command),
            ]
            for j in jobs
        ),
    )


def usage_table(rows: Iterable[dict[str, Any]]) -> str:
    return table(
        ["OWNER", "JOBS", "RUN HOURS", "GPU HOURS", "CPU HOURS"],
        (
            [
                row["owner"],
                str(row["jobs"]),
                f"{row['run_seconds'] / 3600:.2f}",
                f"{row['gpu_seconds'] / 3600:.2f}",
                f"{row['cpu_seconds'] / 3600:.2f}",
            ]
            for row in rows
        ),
    )


def job_details(job: Job) -> str:
    gpus = ", ".join(str(g.index if g.index is not None else g.uuid) for g in job.assigned_gpus)
    rows = [
        ("job", job.job_id),
        ("name", job.name or "-"),
        ("status", job.status),
        ("command", job.command),
        ("image", job.image or "-"),
        ("gpus", "-" if job.gpus is None else f"{job.gpus}" + (f" ({gpus})" if gpus else "")),
        ("gpu memory", "-" if job.gpu_memory is None else f"{job.gpu_memory} MiB"),
        ("cpus", "-" if job.cpus is None else f"{job.cpus:g}"),
        ("memory", "-" if job.memory is None else f"{job.memory} MiB"),
        ("env", " ".join(f"{k}={v}" for k, v in job.env.items()) or "-"),
        ("secret env", " ".join(job.secret_env) or "-"),
        ("labels", " ".join(f"{k}={v}" for k, v in job.labels.items()) or "-"),
        ("timeout", "-" if job.timeout is None else f"{job.timeout:g}s"),
        ("created", when(job.created_at)),
        ("started", when(job.started_at)),
        ("finished", when(job.finished_at)),
        ("exit code", "-" if job.exit_code is None else str(job.exit_code)),
        ("reason", job.reason or "-"),
        ("runner", job.runner or "-"),
        ("attempt", "-" if job.attempt is None else str(job.attempt)),
    ]
    width = max(len(name) for name, _ in rows) + 1
    return "\n".join(f"{name + ':':<{width}} {value}" for name, value in rows)


def events_table(events: Iterable[Event]) -> str:
    return table(
        ["TIME", "EVENT", "BY", "DATA"],
        (
            [
                e.occurred_at.astimezone(UTC).isoformat(timespec="milliseconds")
                if e.occurred_at
                else "-",
                e.type,
                e.producer,
                short(json.dumps(dict(e.data), separators=(",", ":"), sort_keys=True), 100),
            ]
            for e in events
        ),
    )


def files_table(entries: Iterable[FileEntry]) -> str:
    return table(
        ["TYPE", "SIZE", "MODIFIED", "NAME"],
        (
            [
                e.type,
                human_bytes(e.size) if e.type == "file" and e.size is not None else "-",
                when(e.modified),
                e.name + ("/" if e.is_dir else "") + (f" -> {e.target}" if e.target else ""),
            ]
            for e in entries
        ),
    )


def final_line(job: Job) -> str:
    return f"job {job.job_id} {job.status}" + (f" ({outcome(job)})" if outcome(job) else "")
