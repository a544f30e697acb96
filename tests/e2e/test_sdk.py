"""The Python SDK against the running services: what a script that submits jobs does."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading

import pytest

from freight import Client, Conflict, ConnectionFailed, InvalidRequest, NotFound
from freight.aio import AsyncClient
from freight.responses import JobResponses
from freight.retry import RetryPolicy
from tests.e2e.conftest import free_port
from tests.waiting import wait_until


@pytest.fixture
def client(cluster):
    with Client(
        cluster.url,
        amqp_url=cluster.settings.amqp_url,
        response_exchange=cluster.settings.response_exchange,
    ) as client:
        yield client


def test_submit_two_files_wait_logs_and_download(client, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("echo from the script\n")
    data = bytes(range(256)) * 4096  # 1 MiB, every byte value
    job = client.submit(
        "sh in/script.sh; sha256sum /data/blob.bin > /job/out.txt; echo to stderr >&2",
        files={"in/script.sh": script, "/data/blob.bin": io.BytesIO(data)},
        env={"UNUSED": "x"},
    )
    assert job.status == "QUEUED"

    done = client.wait(job.job_id, timeout=60)
    assert done.status == "COMPLETE" and done.exit_code == 0

    assert client.logs(job.job_id, stream="stdout") == "from the script\n"
    assert "to stderr" in client.logs(job.job_id)
    assert {e.name for e in client.files_ls(job.job_id, "/job")} >= {"in", "out.txt"}
    target = tmp_path / "out.txt"
    written = client.files_get(job.job_id, "/job/out.txt", target)
    assert target.stat().st_size == written
    assert target.read_text().split()[0] == hashlib.sha256(data).hexdigest()
    with pytest.raises(InvalidRequest, match="directory"):
        client.files_get(job.job_id, "/job", tmp_path / "nope")


def test_follow_sees_every_line_once_in_order(client):
    job = client.submit("i=1; while [ $i -le 30 ]; do echo line $i; sleep 0.1; i=$((i+1)); done")
    assert list(client.follow(job.job_id)) == [f"line {i}" for i in range(1, 31)]
    assert client.get(job.job_id).finished


def test_wait_listens_on_job_response_and_survives_without_rabbitmq(client, cluster):
    running = client.submit("sleep 300").job_id
    listener = JobResponses(client.amqp_url, client.response_exchange, running)
    try:
        client.cancel(running)
        response = wait_until(lambda: next(listener.arrivals(every=0.5)), timeout=30)
    finally:
        listener.close()
    assert response["job_id"] == running and response["reason"] == "cancelled"

    job = client.submit("sleep 1; exit 3")
    failed = client.wait(job.job_id, timeout=30)
    assert failed.status == "FAILED" and failed.exit_code == 3 and failed.reason == "exit code 3"

    job = client.submit("sleep 1; exit 4")
    seen = []
    polling = Client(cluster.url, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert polling.wait(job.job_id, timeout=30, on_status=seen.append).exit_code == 4
    assert seen[-1].status == "FAILED" and len(seen) > 1


def test_history_listing_cancel_and_the_apis_errors(client):
    jobs = [client.submit("sleep 300").job_id for _ in range(3)]
    # Listing reads the projection, a moment behind the log: wait for all three to show.
    listed = wait_until(
        lambda: len(ids := [j.job_id for j in client.list("all", page_size=2)]) == 3 and ids
    )
    assert listed == jobs[::-1]

    cancelled = client.cancel(jobs[0])
    assert cancelled.job_id == jobs[0] and jobs[0] in cancelled.message
    assert client.wait(jobs[0], timeout=30).reason == "cancelled"
    with pytest.raises(Conflict, match="already ended"):
        client.cancel(jobs[0])
    types = [e.type for e in client.events(jobs[0])]
    assert types[0] == "JobSubmitted" and "JobCancelRequested" in types

    with pytest.raises(NotFound, match="no job with id 'nope'"):
        client.get("nope")
    with pytest.raises(InvalidRequest, match="command"):
        client.submit("  ")
    for job_id in jobs[1:]:
        client.cancel(job_id)


def test_an_unreachable_server_says_what_to_do():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed, match=f"cannot reach Freight at {url}: is `make up`"):
        Client(url, retry=RetryPolicy(retries=0)).get("anything")


def test_a_file_from_a_pipe_is_sent_chunked_and_arrives_whole(client):
    data = os.urandom(3 * 1024 * 1024)
    read_end, write_end = os.pipe()

    def write_all() -> None:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write_all)
    writer.start()
    with os.fdopen(read_end, "rb") as pipe:  # not seekable, its size unknown: chunked
        job = client.submit("sha256sum /job/in.bin", files={"/job/in.bin": pipe})
    writer.join()
    assert client.wait(job.job_id, timeout=60).exit_code == 0
    assert client.logs(job.job_id).split()[0] == hashlib.sha256(data).hexdigest()


def test_the_async_client_submits_follows_and_waits(cluster, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("cat /job/data.txt; echo one; echo two\n")

    async def scenario() -> None:
        async with AsyncClient(cluster.url) as client:
            job = await client.submit(
                "sh script.sh", files={"script.sh": script, "data.txt": b"from bytes\n"}
            )
            assert [line async for line in client.follow(job.job_id)] == [
                "from bytes",
                "one",
                "two",
            ]
            done = await client.wait(job.job_id, timeout=60)
            assert done.status == "COMPLETE" and done.exit_code == 0
            assert await client.logs(job.job_id) == "from bytes\none\ntwo\n"
            assert job.job_id in {j.job_id for j in await client.list("all")}
            assert [e.type for e in await client.events(job.job_id)][0] == "JobSubmitted"

            running = await client.submit("sleep 300")
            assert (await client.cancel(running.job_id)).job_id == running.job_id
            with pytest.raises(NotFound):
                await client.get("0d6c1111-1111-4111-8111-111111111111")

    asyncio.run(scenario())
