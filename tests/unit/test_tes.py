"""GA4GH TES on Freight's jobs (docs/tes.md): the executors' script (run with a real `sh`), the
state a job's life reads as, the three views, and the routes over fakes of the log and the read
model: create, get, list with page tokens and filters, cancel, and HTTP Basic auth."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from freight.jobspec import Status
from freight_server.services.api.app import create_app
from freight_server.services.api.jobs import ApiDeps
from freight_server.services.api.store import RecentSubmissions
from freight_server.services.api.tes import page_of
from freight_server.services.api.tes_model import (
    Executor,
    InvalidTask,
    Task,
    TaskRecord,
    TesState,
    View,
    check_task,
    executor_script,
    job_fields,
    present_task,
    tes_state,
)
from freight_server.shared.config import Settings
from freight_server.shared.events import Event, EventFactory, EventType
from freight_server.shared.filestore_protocol import StoredBlob
from freight_server.shared.jobs import JobView, Outcome, evolve
from freight_server.shared.tokens import add_token

TASKS = "/ga4gh/tes/v1/tasks"
WHEN = datetime(2030, 1, 1, tzinfo=UTC)

# -- the executors' script ---------------------------------------------------------------------


def run_script(executors: list[Executor], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", executor_script(executors)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_executors_run_in_order_each_in_its_workdir_with_its_env(tmp_path):
    work = tmp_path / "a b"  # made, and quoted
    executors = [
        Executor(
            image="busybox",
            command=["sh", "-c", 'printf "%s|%s" "$GREETING" "$(pwd)" > first.txt'],
            workdir=str(work),
            env={"GREETING": "it's $HOME; `x`"},
        ),
        Executor(
            image="busybox",
            command=["cat", "first.txt", "missing words"],
            workdir=str(work),
            stdout=str(tmp_path / "out" / "second.txt"),
            stderr=str(tmp_path / "out" / "second.err"),
            ignore_error=True,
        ),
        Executor(image="busybox", command=["sh", "-c", 'echo "${GREETING:-unset}"']),
    ]
    done = run_script(executors, tmp_path)

    assert done.returncode == 0, done.stderr
    assert (work / "first.txt").read_text() == f"it's $HOME; `x`|{work}"
    assert (tmp_path / "out" / "second.txt").read_text() == f"it's $HOME; `x`|{work}"
    assert "missing words" in (tmp_path / "out" / "second.err").read_text()
    assert done.stdout == "unset\n"  # one executor's env is not the next one's


def test_the_first_failing_executor_ends_the_script_with_its_exit_code(tmp_path):
    executors = [
        Executor(image="busybox", command=["sh", "-c", "exit 3"], ignore_error=True),
        Executor(image="busybox", command=["sh", "-c", "echo reached; exit 7"]),
        Executor(image="busybox", command=["touch", str(tmp_path / "never")]),
    ]
    done = run_script(executors, tmp_path)

    assert (done.returncode, done.stdout) == (7, "reached\n")
    assert not (tmp_path / "never").exists()


def test_stdin_is_read_from_its_file(tmp_path):
    (tmp_path / "in.txt").write_text("piped\n")
    executor = Executor(image="busybox", command=["cat"], stdin=str(tmp_path / "in.txt"))
    assert run_script([executor], tmp_path).stdout == "piped\n"


def test_a_task_maps_onto_a_job_request():
    task = Task.model_validate(
        {
            "name": "train",
            "executors": [{"image": "img:1", "command": ["true"]}],
            "resources": {
                "cpu_cores": 2,
                "ram_gb": 1.5,
                "backend_parameters": {"gpus": "2", "timeout": "60", "zone": "x"},
            },
        }
    )
    fields = job_fields(task)
    assert fields["image"] == ["img:1"]
    assert fields["name"] == ["train"]
    assert (fields["cpus"], fields["memory"]) == ([2], [1536])
    assert (fields["gpus"], fields["timeout"]) == (["2"], ["60"])
    assert "zone" not in fields


@pytest.mark.parametrize(
    ("task", "words"),
    [
        (
            {
                "executors": [
                    {"image": "a", "command": ["true"]},
                    {"image": "b", "command": ["true"]},
                ]
            },
            "share one image",
        ),
        ({"executors": [{"image": "a", "command": ["true"], "workdir": "rel"}]}, "absolute"),
        ({"executors": [{"image": "a", "command": ["true"], "env": {"A-B": "1"}}]}, "variable"),
        (
            {
                "executors": [{"image": "a", "command": ["true"]}],
                "inputs": [{"path": "/x", "content": "a", "url": "file:///x"}],
            },
            "exactly one of url and content",
        ),
    ],
)
def test_tasks_freight_cannot_run_are_refused(task, words):
    with pytest.raises(InvalidTask, match=words):
        check_task(Task.model_validate(task))


# -- states and views --------------------------------------------------------------------------


def view_of(**changes: Any) -> JobView:
    base = JobView(job_id="j1", status=Status.QUEUED, command="true", image="i", created_at=WHEN)
    return replace(base, **changes)


NO_RECORD = TaskRecord(task=Task(executors=[Executor(image="i", command=["true"])]))


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({}, TesState.QUEUED),
        ({"status": Status.PENDING}, TesState.INITIALIZING),
        ({"status": Status.RUNNING}, TesState.RUNNING),
        ({"status": Status.RUNNING, "cancel_requested": True}, TesState.CANCELING),
        ({"status": Status.COMPLETE, "outcome": Outcome.SUCCEEDED}, TesState.COMPLETE),
        ({"status": Status.FAILED, "outcome": Outcome.CANCELLED}, TesState.CANCELED),
        ({"status": Status.FAILED, "outcome": Outcome.FAILED}, TesState.EXECUTOR_ERROR),
        ({"status": Status.FAILED, "outcome": Outcome.TIMED_OUT}, TesState.EXECUTOR_ERROR),
        ({"status": Status.FAILED, "outcome": Outcome.OUT_OF_MEMORY}, TesState.EXECUTOR_ERROR),
        ({"status": Status.FAILED, "outcome": Outcome.LOST}, TesState.SYSTEM_ERROR),
        ({"status": Status.FAILED, "outcome": Outcome.ERROR}, TesState.SYSTEM_ERROR),
    ],
)
def test_a_jobs_status_and_outcome_read_as_a_tes_state(changes, state):
    assert tes_state(view_of(**changes), NO_RECORD) == state


def test_a_task_freight_will_not_run_is_a_system_error_whatever_its_job_did():
    record = NO_RECORD.model_copy(update={"system_error": "s3:// is not supported here"})
    cancelled = view_of(status=Status.FAILED, outcome=Outcome.CANCELLED)
    assert tes_state(cancelled, record) == TesState.SYSTEM_ERROR


def tes_view(**changes: Any) -> JobView:
    task = {
        "name": "n",
        "executors": [{"image": "i", "command": ["echo", "hi"]}],
        "inputs": [{"path": "/job/in.txt", "content": "secret-ish"}],
        "tags": {"team": "ml"},
    }
    ended = {
        "status": Status.FAILED,
        "outcome": Outcome.FAILED,
        "exit_code": 2,
        "reason": "exit code 2",
        "started_at": WHEN,
        "finished_at": WHEN,
        "attempt": 1,
    }
    return view_of(tes={"task": task}, **{**ended, **changes})


def test_the_minimal_view_is_id_and_state():
    assert present_task(tes_view(), View.MINIMAL) == {"id": "j1", "state": "EXECUTOR_ERROR"}


def test_the_basic_view_leaves_out_content_output_and_system_logs():
    shown = present_task(tes_view(), View.BASIC, output=("out", "err"))
    assert shown["inputs"] == [{"path": "/job/in.txt", "type": "FILE"}]
    assert shown["tags"] == {"team": "ml"}
    (log,) = shown["logs"]
    assert log["logs"] == [
        {"start_time": WHEN.isoformat(), "end_time": WHEN.isoformat(), "exit_code": 2}
    ]
    assert "system_logs" not in log


def test_the_full_view_has_everything():
    shown = present_task(tes_view(), View.FULL, output=("out", "err"))
    assert shown["inputs"][0]["content"] == "secret-ish"
    (log,) = shown["logs"]
    assert (log["logs"][0]["stdout"], log["logs"][0]["stderr"]) == ("out", "err")
    assert log["system_logs"] == ["exit code 2"]
    assert log["outputs"] == []
    assert shown["creation_time"] == WHEN.isoformat()


def test_a_job_from_jobs_is_a_one_executor_task():
    shown = present_task(view_of(command="echo hi", labels={"a": "b"}), View.BASIC)
    assert shown["executors"] == [{"image": "i", "command": ["sh", "-c", "echo hi"], "env": {}}]
    assert shown["tags"] == {"a": "b"}


def test_a_page_reads_no_further_than_it_may_and_says_where_to_go_on():
    rows = [(position, view_of(job_id=str(position))) for position in (9, 8, 7, 6)]
    everything = lambda view: True  # noqa: E731
    odd = lambda view: int(view.job_id) % 2 == 1  # noqa: E731
    assert page_of(rows[:3], 2, 2, everything) == ([rows[0][1], rows[1][1]], 8)
    assert page_of(rows[:2], 2, 2, everything) == ([rows[0][1], rows[1][1]], None)
    assert page_of(rows, 2, 3, odd) == ([rows[0][1], rows[2][1]], 7)
    assert page_of(rows[:2], 2, 3, odd) == ([rows[0][1]], None)


# -- the routes, over fakes --------------------------------------------------------------------


class FakeLog:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, *events: Event) -> None:
        self.events.extend(events)


class FakeJobs:
    """The projection as it would be: the log folded; a job's position, its JobSubmitted's."""

    def __init__(self, log: FakeLog):
        self._log = log

    def _views(self) -> dict[str, tuple[int, JobView]]:
        views: dict[str, tuple[int, JobView]] = {}
        for position, event in enumerate(self._log.events, 1):
            known = views.get(str(event.job_id))
            view = evolve(known[1] if known else None, event)
            if view is not None:
                views[view.job_id] = (known[0] if known else position, view)
        return views

    def get(self, job_id: str) -> JobView | None:
        found = self._views().get(job_id)
        return found[1] if found else None

    def newest(self, owner: str | None, before: int | None, limit: int) -> list[Any]:
        rows = sorted(self._views().values(), key=lambda row: -row[0])
        rows = [r for r in rows if owner is None or r[1].owner == owner]
        return [r for r in rows if before is None or r[0] < before][:limit]


class FakeFilestore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def upload(self, pieces: Iterable[bytes]) -> StoredBlob:
        data = b"".join(pieces)
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self.blobs[digest] = data
        return StoredBlob(digest, len(data), f"upload-{len(self.blobs)}")

    def release(self, uploads: list[str]) -> None:
        pass


class Api:
    def __init__(self, settings: Settings):
        self.log = FakeLog()
        self.filestore = FakeFilestore()
        deps = ApiDeps(
            settings=settings,
            log=self.log,
            jobs=FakeJobs(self.log),  # type: ignore[arg-type]
            recent=RecentSubmissions(),
            new_event=EventFactory("api", clock=lambda: WHEN),
            new_job_id=lambda: str(uuid.uuid4()),
            filestore=self.filestore,  # type: ignore[arg-type]
        )
        self.client = falcon.testing.TestClient(create_app(deps))

    def create(self, task: dict[str, Any], **kwargs: Any) -> str:
        created = self.client.simulate_post(TASKS, json=task, **kwargs)
        assert created.status_code == 200, created.text
        assert list(created.json) == ["id"]
        return str(created.json["id"])


def echo(*words: str, **more: Any) -> dict[str, Any]:
    return {"executors": [{"image": "busybox", "command": ["echo", *words]}], **more}


@pytest.fixture
def shared_dir(tmp_path) -> Path:
    allowed = tmp_path / "shared"
    allowed.mkdir()
    return allowed


@pytest.fixture
def api(shared_dir) -> Api:
    return Api(Settings(tes_allowed_dirs=(shared_dir,)))


def test_service_info_says_what_freight_supports(api, shared_dir):
    info = api.client.simulate_get("/ga4gh/tes/v1/service-info").json
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert info["storage"] == [shared_dir.resolve().as_uri()]
    assert info["tesResources_backend_parameters"] == [
        "gpus",
        "gpu_memory",
        "timeout",
        "max_attempts",
    ]


def test_a_task_is_a_job_with_its_inputs_uploaded_and_its_record_kept(api, shared_dir):
    (shared_dir / "data.csv").write_text("1,2\n")
    task_id = api.create(
        {
            **echo("hi"),
            "inputs": [
                {"path": "/job/in.txt", "content": "inline"},
                {"path": "/data/data.csv", "url": (shared_dir / "data.csv").as_uri()},
            ],
            "resources": {"backend_parameters": {"gpus": "0", "max_attempts": "2"}},
        }
    )
    (submitted,) = api.log.events
    assert submitted.type == EventType.JOB_SUBMITTED and submitted.job_id == task_id
    assert submitted.data["command"] == "(exec echo hi) || exit $?"
    assert (submitted.data["gpus"], submitted.data["max_attempts"]) == (0, 2)
    files = {f["path"]: api.filestore.blobs[f["digest"]] for f in submitted.data["files"]}
    assert files == {"/job/in.txt": b"inline", "/data/data.csv": b"1,2\n"}
    assert submitted.data["tes"]["task"]["inputs"][0]["content"] == "inline"

    shown = api.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "BASIC"}).json
    assert shown["state"] == "QUEUED"
    assert shown["executors"] == [{"image": "busybox", "command": ["echo", "hi"]}]


def test_other_url_schemes_are_accepted_and_the_task_ends_a_system_error(api):
    task_id = api.create(echo("hi", inputs=[{"path": "/job/x", "url": "s3://bucket/x"}]))
    assert [e.type for e in api.log.events] == [
        EventType.JOB_SUBMITTED,
        EventType.JOB_CANCEL_REQUESTED,
    ]
    shown = api.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "FULL"}).json
    assert shown["state"] == "SYSTEM_ERROR"
    assert "s3:// is not supported here" in shown["logs"][0]["system_logs"][0]


def test_file_urls_outside_the_allowed_directories_are_refused(api, tmp_path):
    (tmp_path / "secret").write_text("no")
    refused = api.client.simulate_post(
        TASKS, json=echo(inputs=[{"path": "/x", "url": (tmp_path / "secret").as_uri()}])
    )
    assert refused.status_code == 400
    assert "outside the allowed directories" in refused.json["message"]
    assert api.log.events == []


def test_listing_pages_newest_first_with_filters(api):
    ids = [api.create(echo(str(n), name=f"run-{n}", tags={"n": str(n % 2)})) for n in range(5)]
    seen, token = [], None
    while True:
        params = {"page_size": "2", **({"page_token": token} if token else {})}
        page = api.client.simulate_get(TASKS, params=params).json
        seen += [t["id"] for t in page["tasks"]]
        assert all(set(t) == {"id", "state"} for t in page["tasks"])
        token = page.get("next_page_token")
        if token is None:
            break
    assert seen == ids[::-1]

    odd = api.client.simulate_get(
        TASKS, params={"tag_key": "n", "tag_value": "1", "view": "BASIC"}
    ).json
    assert [t["name"] for t in odd["tasks"]] == ["run-3", "run-1"]
    named = api.client.simulate_get(TASKS, params={"name_prefix": "run-4"}).json
    assert [t["id"] for t in named["tasks"]] == [ids[4]]


def test_cancel_ends_a_queued_task_and_leaves_an_ended_one_alone(api):
    task_id = api.create(echo("hi"))
    for _ in range(2):
        cancelled = api.client.simulate_post(f"{TASKS}/{task_id}:cancel")
        assert (cancelled.status_code, cancelled.json) == (200, {})
    assert [e.type for e in api.log.events].count(EventType.JOB_CANCEL_REQUESTED) == 1
    shown = api.client.simulate_get(f"{TASKS}/{task_id}").json
    assert shown == {"id": task_id, "state": "CANCELED"}
    assert api.client.simulate_post(f"{TASKS}/nope:cancel").status_code == 404


def test_http_basic_auth_takes_the_token_as_password(tmp_path):
    path = tmp_path / "tokens"
    token = add_token(path, "alice", "user")
    api = Api(Settings(api_tokens_file=path))

    def basic(user: str, password: str) -> dict[str, str]:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}

    task_id = api.create(echo("hi"), headers=basic("alice", token))
    assert api.log.events[0].data["owner"] == "alice"
    for refused in (basic("bob", token), basic("alice", "frt_nope"), {}):
        answer = api.client.simulate_get(f"{TASKS}/{task_id}", headers=refused)
        assert answer.status_code == 401
    listed = api.client.simulate_get(TASKS, headers=basic("", token)).json
    assert [t["id"] for t in listed["tasks"]] == [task_id]


def test_more_memory_than_a_number_holds_is_refused_not_a_crash(api):
    # Found by schemathesis: 1.7e305 GB in MiB is past the largest float.
    asked = {**echo(), "resources": {"cpu_cores": 1, "ram_gb": 1.7555597020139804e305}}
    refused = api.client.simulate_post(TASKS, json=asked)
    assert refused.status_code == 400
    assert "ram_gb" in refused.json["message"]
    assert api.log.events == []
