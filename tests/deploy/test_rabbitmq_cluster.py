"""A RabbitMQ cluster (docs/deploy.md: RabbitMQ, a cluster): three nodes, the events stream
replicated on all three, Freight's classic queues mirrored by a policy. One node is stopped while
jobs flow; every job the API confirmed (201) is still there and ends, and the services carry on
through the other nodes behind the load balancer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pika
import pytest
import requests

from tests.conftest import fresh_settings
from tests.deploy.rabbitmq_cluster import Balancer, Node, rabbitmq_cluster, stop
from tests.e2e.conftest import Cluster, free_port, running_cluster
from tests.waiting import wait_until

pytestmark = pytest.mark.docker

# docs/deploy.md: on RabbitMQ before 3.12, classic queues are replicated by this policy.
MIRRORING = '{"ha-mode": "all", "ha-sync-mode": "automatic"}'


@pytest.fixture
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    with rabbitmq_cluster(tmp_path_factory.mktemp("rabbitmq")) as nodes:
        nodes[0].ctl("set_policy", "--apply-to", "queues", "freight-mirrored", "^", MIRRORING)
        yield nodes


@pytest.fixture
def cluster(nodes: list[Node], tmp_path: Path) -> Iterator[Cluster]:
    balancer = Balancer(nodes)
    settings = replace(
        fresh_settings(f"amqp://guest:guest@127.0.0.1:{balancer.port}/", tmp_path / "home"),
        api_bind=f"127.0.0.1:{free_port()}",
        runner_deadline=60.0,  # no runner is lost here: a node is
    )
    try:
        with running_cluster(settings, tmp_path / "logs") as cluster:
            yield cluster
    finally:
        balancer.close()


def stream_members(node: Node, stream: str) -> list[dict[str, object]]:
    status = node.ctl("stream_status", stream, "--formatter", "json", tool="rabbitmq-streams")
    return list(json.loads(status))


@pytest.mark.timeout(300)
def test_a_node_stopped_mid_flow_loses_no_confirmed_event(nodes: list[Node], cluster: Cluster):
    stream = f"{cluster.settings.namespace}.events"
    members = stream_members(nodes[1], stream)
    # A replica on every node (the default for a stream declared without x-initial-cluster-size),
    # the writer where it was declared: the node every connection goes to first.
    assert sorted(m["node"] for m in members) == sorted(n.name for n in nodes), members
    assert [m["node"] for m in members if m["role"] == "writer"] == [nodes[0].name], members

    confirmed: list[str] = []

    def submit(index: int) -> bool:
        try:
            response = requests.post(
                f"{cluster.url}/jobs",
                data={"command": f"echo {index}"},
                headers={"Idempotency-Key": f"job-{index}"},
                timeout=30,
            )
        except requests.ConnectionError:
            return False
        if response.status_code == 201:
            confirmed.append(response.json()["job_id"])
        return response.status_code == 201

    for index in range(10):
        assert submit(index)
    stop(nodes[0])
    for index in range(10, 20):
        # While the services reconnect the API may answer 503 (nothing accepted): retry.
        wait_until(lambda i=index: submit(i), timeout=60, what=f"job {index} to be accepted")

    assert len(set(confirmed)) == 20
    for job_id in confirmed:
        assert cluster.wait_for_status(job_id, "COMPLETE", "FAILED", timeout=90)["status"] == (
            "COMPLETE"
        )
    # job_response, mirrored, holds every job's end on the nodes left.
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", nodes[1].port))
    channel, announced = connection.channel(), set()

    def all_announced() -> bool:
        while (message := channel.basic_get(cluster.settings.response_queue, auto_ack=True))[0]:
            announced.add(json.loads(message[2])["job_id"])
        return announced >= set(confirmed)

    wait_until(all_announced, timeout=60, what="a job_response for every job")
    connection.close()
    # The two nodes left elected a new writer among themselves.
    members = stream_members(nodes[1], stream)
    assert {m["node"] for m in members} == {nodes[1].name, nodes[2].name}, members
    assert [m["role"] for m in members].count("writer") == 1, members
