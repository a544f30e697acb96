"""GA4GH TES v1.1 on Freight's jobs, as plain functions on plain data (docs/tes.md).

A TES task is one Freight job: its executors become one `sh` script run in the job's one
container, its `content` and `file://` inputs the job's input files, its state a reading of the
job's. The models below hold the specification's fields and no others (clients such as py-tes
refuse a key they do not know); what a task was created with is kept in its JobSubmitted, under
`tes`, as `TaskRecord`.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from freight.jobspec import ENV_NAME, Status
from freight_server.shared.jobs import JobView, Outcome

TES_VERSION = "1.1.0"
# The backend_parameters Freight understands, advertised in service-info; each is the JobSpec
# field of the same name.
BACKEND_PARAMETERS = ("gpus", "gpu_memory", "timeout", "max_attempts")
MAX_CONTENT_BYTES = 1024 * 1024  # every `content` input together: it is kept in the log


class TesState(StrEnum):
    UNKNOWN = "UNKNOWN"
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"
    SYSTEM_ERROR = "SYSTEM_ERROR"
    CANCELED = "CANCELED"
    CANCELING = "CANCELING"
    PREEMPTED = "PREEMPTED"


class View(StrEnum):
    MINIMAL = "MINIMAL"
    BASIC = "BASIC"
    FULL = "FULL"


class _Spec(BaseModel):
    # A request may carry fields of a later version: they are ignored, never echoed back.
    model_config = ConfigDict(extra="ignore")


FileType = Literal["FILE", "DIRECTORY"]


class Input(_Spec):
    name: str | None = None
    description: str | None = None
    url: str | None = None
    path: str
    type: FileType = "FILE"
    content: str | None = None
    streamable: bool | None = None


class Output(_Spec):
    name: str | None = None
    description: str | None = None
    url: str
    path: str
    path_prefix: str | None = None
    type: FileType = "FILE"


class Resources(_Spec):
    cpu_cores: int | None = Field(default=None, ge=1)
    preemptible: bool | None = None
    # At most a pebibyte: beyond that the MiB Freight asks for would not be a number.
    ram_gb: float | None = Field(default=None, gt=0, le=1024 * 1024, allow_inf_nan=False)
    disk_gb: float | None = None
    zones: list[str] | None = None
    backend_parameters: dict[str, str] | None = None
    backend_parameters_strict: bool | None = None


class Executor(_Spec):
    image: str = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    workdir: str | None = None
    stdin: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: dict[str, str] | None = None
    ignore_error: bool | None = None


class ExecutorLog(_Spec):
    start_time: str | None = None
    end_time: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int


class OutputFileLog(_Spec):
    url: str
    path: str
    size_bytes: str  # an int64 as a string, as the specification has it


class TaskLog(_Spec):
    logs: list[ExecutorLog]
    metadata: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    outputs: list[OutputFileLog]
    system_logs: list[str] | None = None


class Task(_Spec):
    id: str | None = None
    state: TesState | None = None
    name: str | None = None
    description: str | None = None
    inputs: list[Input] | None = None
    outputs: list[Output] | None = None
    resources: Resources | None = None
    executors: list[Executor] = Field(min_length=1)
    volumes: list[str] | None = None
    tags: dict[str, str] | None = None
    logs: list[TaskLog] | None = None
    creation_time: str | None = None


class ServiceType(_Spec):
    group: str
    artifact: str
    version: str


class Organization(_Spec):
    name: str
    url: str


class ServiceInfo(_Spec):
    id: str
    name: str
    type: ServiceType
    description: str | None = None
    organization: Organization
    version: str
    storage: list[str] = Field(default_factory=list)
    backend_parameters: list[str] = Field(
        default_factory=list, serialization_alias="tesResources_backend_parameters"
    )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TaskRecord(BaseModel):
    """JobSubmitted's `tes`: the task as created, and why Freight will not run it, if so."""

    task: Task
    system_error: str | None = None


class InvalidTask(ValueError):
    """A task Freight can never run as asked: answered 400, nothing created."""


# -- creating: a task's parts as a job's ----------------------------------------------------------


def check_task(task: Task) -> None:
    """What makes a task invalid here whatever the storage: raises InvalidTask."""
    images = {executor.image for executor in task.executors}
    if len(images) > 1:
        raise InvalidTask(
            f"executors name {len(images)} images ({', '.join(sorted(images))}); a Freight "
            "task runs its executors in one container, so they must share one image"
        )
    for number, executor in enumerate(task.executors, 1):
        for key in executor.env or {}:
            if not _is_env_name(key):
                raise InvalidTask(f"executors[{number - 1}].env: {key!r} is not a variable name")
        for what in ("workdir", "stdin", "stdout", "stderr"):
            path = getattr(executor, what)
            if path is not None and not posixpath.isabs(path):
                raise InvalidTask(f"executors[{number - 1}].{what} must be an absolute path")
    for number, given in enumerate(task.inputs or ()):
        if (given.url is None) == (given.content is None):
            raise InvalidTask(f"inputs[{number}] needs exactly one of url and content")
        if not posixpath.isabs(given.path):
            raise InvalidTask(f"inputs[{number}].path must be an absolute path")
        if given.content is not None and given.type != "FILE":
            raise InvalidTask(f"inputs[{number}]: content makes a FILE, not a {given.type}")
    for number, wanted in enumerate(task.outputs or ()):
        if not posixpath.isabs(wanted.path):
            raise InvalidTask(f"outputs[{number}].path must be an absolute path")
    content = sum(len((i.content or "").encode()) for i in task.inputs or ())
    if content > MAX_CONTENT_BYTES:
        raise InvalidTask(
            f"the inputs' content is {content} bytes; at most {MAX_CONTENT_BYTES} can be sent "
            "inline: give larger inputs by url"
        )


def job_fields(task: Task) -> dict[str, list[Any]]:
    """The JobSpec fields (as freight_server/services/api/submission.py parses them) the task
    asks for."""
    fields: dict[str, list[Any]] = {
        "command": [executor_script(task.executors)],
        "image": [task.executors[0].image],
    }
    if task.name:
        fields["name"] = [task.name]
    resources = task.resources or Resources()
    if resources.cpu_cores is not None:
        fields["cpus"] = [resources.cpu_cores]
    if resources.ram_gb is not None:
        fields["memory"] = [max(1, round(resources.ram_gb * 1024))]
    for key, value in (resources.backend_parameters or {}).items():
        if key in BACKEND_PARAMETERS:
            fields[key] = [value]
    return fields


def unsupported_parameters(resources: Resources | None) -> list[str]:
    """backend_parameters Freight does not know: ignored, unless the task is strict about them."""
    given = (resources.backend_parameters or {}) if resources else {}
    return sorted(key for key in given if key not in BACKEND_PARAMETERS)


def executor_script(executors: Sequence[Executor]) -> str:
    """One `sh` script running each executor in order, each in a subshell of its own (its
    workdir, env and redirections do not leak into the next). The first executor that fails,
    unless it has `ignore_error`, ends the script with its exit code."""
    return "\n".join(_executor_line(executor) for executor in executors)


def _executor_line(executor: Executor) -> str:
    made = [executor.workdir] if executor.workdir else []
    made += [posixpath.dirname(p) for p in (executor.stdout, executor.stderr) if p]
    steps = [f"cd {shlex.quote(executor.workdir)}"] if executor.workdir else []
    steps += [f"export {name}={shlex.quote(value)}" for name, value in (executor.env or {}).items()]
    steps.append(f"exec {shlex.join(executor.command)}")
    line = f"({' && '.join(steps)})"
    for operator, path in (("<", executor.stdin), (">", executor.stdout), ("2>", executor.stderr)):
        if path:
            line += f" {operator} {shlex.quote(path)}"
    if made:
        # Docker makes a missing workdir; a TES executor expects the same of its redirections.
        line = f"mkdir -p {shlex.join(sorted(set(made)))} && {line}"
    return f"{line} || true" if executor.ignore_error else f"{line} || exit $?"


def _is_env_name(name: str) -> bool:
    return re.fullmatch(ENV_NAME, name) is not None


# -- reading: a job as a task ----------------------------------------------------------------------


def record_of(view: JobView) -> TaskRecord:
    """The task a job runs: its own record, or (a job from /jobs) one executor with its command."""
    if view.tes is not None:
        return TaskRecord.model_validate(view.tes)
    executor = Executor(image=view.image, command=["sh", "-c", view.command], env=dict(view.env))
    return TaskRecord(
        task=Task(name=view.name, executors=[executor], tags=dict(view.labels) or None)
    )


def tes_state(view: JobView, record: TaskRecord) -> TesState:
    if record.system_error is not None:
        return TesState.SYSTEM_ERROR
    if view.cancel_requested and not view.status.is_terminal:
        return TesState.CANCELING
    match view.status:
        case Status.QUEUED:
            return TesState.QUEUED
        case Status.PENDING:
            return TesState.INITIALIZING
        case Status.RUNNING:
            return TesState.RUNNING
        case Status.COMPLETE:
            return TesState.COMPLETE
    match view.outcome:
        case Outcome.CANCELLED:
            return TesState.CANCELED
        # The command's own doing: it failed, ran past its timeout, or outgrew its memory.
        case Outcome.FAILED | Outcome.TIMED_OUT | Outcome.OUT_OF_MEMORY:
            return TesState.EXECUTOR_ERROR
    return TesState.SYSTEM_ERROR  # its runner was lost, or Freight failed


def present_task(
    view: JobView,
    shown: View,
    output: tuple[str, str] | None = None,
    delivered: Sequence[OutputFileLog] = (),
) -> dict[str, Any]:
    """The task as `shown`. `output`: the tail of what it printed (stdout, stderr), for FULL;
    `delivered`: the outputs written to their urls."""
    record = record_of(view)
    state = tes_state(view, record)
    if shown == View.MINIMAL:
        return {"id": view.job_id, "state": state.value}
    task = record.task.model_copy(
        update={
            "id": view.job_id,
            "state": state,
            "creation_time": _time(view.created_at),
            "logs": [_task_log(view, record, shown, output, delivered)],
        }
    )
    if shown == View.BASIC and task.inputs:
        task.inputs = [i.model_copy(update={"content": None}) for i in task.inputs]
    return task.model_dump(mode="json", exclude_none=True)


def _task_log(
    view: JobView,
    record: TaskRecord,
    shown: View,
    output: tuple[str, str] | None,
    delivered: Sequence[OutputFileLog],
) -> TaskLog:
    executor_logs = []
    if view.started_at is not None and view.exit_code is not None:
        stdout, stderr = output if shown == View.FULL and output else (None, None)
        executor_logs.append(
            ExecutorLog(
                start_time=_time(view.started_at),
                end_time=_time(view.finished_at),
                stdout=stdout,
                stderr=stderr,
                exit_code=view.exit_code,
            )
        )
    system_logs = None
    if shown == View.FULL:
        system_logs = [line for line in (record.system_error, view.reason) if line] or None
    return TaskLog(
        logs=executor_logs,
        metadata={"freight_job_id": view.job_id, "attempt": str(view.attempt)},
        start_time=_time(view.started_at),
        end_time=_time(view.finished_at),
        outputs=list(delivered),
        system_logs=system_logs,
    )


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def matches(
    task: Mapping[str, Any], name_prefix: str | None, state: str | None, tags: Mapping[str, str]
) -> bool:
    """A presented task (BASIC or FULL) against a listing's filters. A tag asked for with an
    empty value matches any value of that key, as the specification says."""
    if name_prefix and not str(task.get("name") or "").startswith(name_prefix):
        return False
    if state and task.get("state") != state:
        return False
    own = task.get("tags") or {}
    return all(key in own and (not value or own[key] == value) for key, value in tags.items())
