"""GA4GH TES through py-tes, the GA4GH's own client (which refuses any key the specification lacks),
against a whole cluster that requires tokens: py-tes sends them as HTTP Basic passwords."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import tes

from freight_server.shared.config import Settings
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import Cluster, running_cluster
from tests.waiting import wait_until

ENDED = ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED")


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tes-shared")


@pytest.fixture(scope="module")
def secured(
    module_cluster_settings: Settings,
    tokens_file: Path,
    tokens: dict[str, str],
    shared_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    api = {"api_tokens_file": tokens_file, "tes_allowed_dirs": shared_dir}
    logs = tmp_path_factory.mktemp("logs")
    with running_cluster(module_cluster_settings, logs, overrides={"api": api}) as cluster:
        yield cluster


@pytest.fixture
def client(secured: Cluster, tokens: dict[str, str]) -> tes.HTTPClient:
    return tes.HTTPClient(secured.url, user="alice", password=tokens["alice"], timeout=30)


def wait_for(client: tes.HTTPClient, task_id: str, *states: str, timeout: float = 90) -> str:
    def reached() -> str | None:
        state = client.get_task(task_id, view="MINIMAL").state
        return state if state in states else None

    return wait_until(reached, timeout=timeout, what=f"task {task_id} to reach {states}")


def test_two_executors_share_a_workdir_and_an_output_lands_on_the_host(client, shared_dir):
    task = tes.Task(
        name="shout",
        inputs=[tes.Input(path="/job/in.txt", content="hello tes\n")],
        outputs=[tes.Output(path="/job/loud.txt", url=(shared_dir / "loud.txt").as_uri())],
        executors=[
            tes.Executor(
                image=TEST_IMAGE,
                command=["sh", "-c", 'tr a-z A-Z < in.txt > loud.txt; echo "$WHO" >&2'],
                workdir="/job",
                env={"WHO": "first"},
            ),
            tes.Executor(image=TEST_IMAGE, command=["cat", "loud.txt"], workdir="/job"),
        ],
        resources=tes.Resources(backend_parameters={"timeout": "120", "max_attempts": "1"}),
    )
    task_id = client.create_task(task)

    assert wait_for(client, task_id, *ENDED) == "COMPLETE"
    full = client.get_task(task_id, view="FULL")
    assert (full.name, full.inputs[0].content) == ("shout", "hello tes\n")
    (log,) = full.logs
    (executed,) = log.logs
    assert (executed.exit_code, executed.stdout, executed.stderr) == (0, "HELLO TES\n", "first\n")
    assert [(o.path, o.size_bytes) for o in log.outputs] == [("/job/loud.txt", 10)]
    assert (shared_dir / "loud.txt").read_text() == "HELLO TES\n"
    assert client.get_task(task_id, view="BASIC").inputs[0].content is None


def test_a_failing_executor_is_an_executor_error(client):
    executors = [tes.Executor(image=TEST_IMAGE, command=["sh", "-c", "exit 4"])]
    task_id = client.create_task(tes.Task(executors=executors))
    assert wait_for(client, task_id, *ENDED) == "EXECUTOR_ERROR"
    assert client.get_task(task_id, view="FULL").logs[0].logs[0].exit_code == 4


def test_cancelling_a_running_task(client):
    executors = [tes.Executor(image=TEST_IMAGE, command=["sleep", "120"])]
    task_id = client.create_task(tes.Task(executors=executors))
    wait_for(client, task_id, "RUNNING")
    client.cancel_task(task_id)
    assert wait_for(client, task_id, *ENDED) == "CANCELED"
    client.cancel_task(task_id)  # an ended task: answered all the same


def test_an_input_freight_cannot_fetch_is_a_system_error(client):
    task = tes.Task(
        inputs=[tes.Input(path="/job/x", url="s3://bucket/x")],
        executors=[tes.Executor(image=TEST_IMAGE, command=["true"])],
    )
    task_id = client.create_task(task)
    assert wait_for(client, task_id, *ENDED) == "SYSTEM_ERROR"
    system_logs = client.get_task(task_id, view="FULL").logs[0].system_logs
    assert "s3:// is not supported here" in system_logs[0]


def test_listing_pages_through_the_callers_tasks(client, secured, tokens):
    executors = [tes.Executor(image=TEST_IMAGE, command=["true"])]
    made = [client.create_task(tes.Task(name=f"page-{n}", executors=executors)) for n in range(3)]

    def every_page() -> list[str]:
        seen: list[str] = []
        token = None
        while True:
            page = client.list_tasks(view="BASIC", page_size=2, page_token=token)
            seen += [t.id for t in page.tasks or ()]
            token = page.next_page_token
            if not token:
                return seen

    # A listing reads the API's projection, which has the tasks a moment after they are made.
    seen = wait_until(lambda: (s := every_page())[:3] == made[::-1] and s, what="the listing")
    assert len(seen) == len(set(seen))  # every task once, the earlier tests' ones after these

    bob = tes.HTTPClient(secured.url, user="bob", password=tokens["bob"])
    assert bob.list_tasks().tasks in (None, [])  # alice's tasks are hers
    info = client.get_service_info()
    assert info.tes_resources_backend_parameters == [
        "gpus",
        "gpu_memory",
        "timeout",
        "max_attempts",
    ]


def test_bearer_and_basic_are_both_accepted_and_nothing_else(secured, tokens):
    url = f"{secured.url}/ga4gh/tes/v1/tasks"
    token = tokens["alice"]
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert requests.get(url, auth=("alice", token)).status_code == 200
    assert requests.get(url, auth=("bob", token)).status_code == 401
    assert requests.get(url).status_code == 401
