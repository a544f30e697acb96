"""Fixtures for the real RabbitMQ, PostgreSQL and Docker engine.

The running services are used when FREIGHT_AMQP_URL / FREIGHT_TEST_POSTGRES_URL are set (as
`make test` does); otherwise testcontainers starts them. Every test gets its own namespace (stream,
queues, exchange) and its own databases, so tests never see each other's messages or rows.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pika
import pytest
import sqlalchemy as sa

from freight_server.shared.config import Settings

TEST_IMAGE = os.environ.get("FREIGHT_TEST_IMAGE", "freight/busybox:local")

# What other tests share and these change: the fault suite restarts RabbitMQ, the deployment
# tests run the compose stack and a RabbitMQ cluster, test_compose builds the images. `make test`
# runs the rest on two workers, then these alone (`-m serial`).
SERIAL = ("tests/faults/", "tests/deploy/", "tests/integration/test_compose.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        if item.path.relative_to(root).as_posix().startswith(SERIAL):
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("FREIGHT_AMQP_URL")
    if url:
        yield url
        return
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13") as rabbit:
        params = rabbit.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    url = os.environ.get("FREIGHT_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16", driver="psycopg2") as pg:
        yield pg.get_connection_url()


def _fresh_postgres_database(server_url: str) -> Iterator[str]:
    name = f"freight_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sa.engine.make_url(server_url).set(database=name))
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'freight.db'}"
    else:
        yield from _fresh_postgres_database(request.getfixturevalue("postgres_server_url"))


class Namespaces:
    """The streams and queues of tests that are over, deleted a few dozen at a time: deleting a
    stream is slow, but every stream holds files open on the broker, and RabbitMQ's default
    limit of 1024 open files is reached by a few hundred of them."""

    BATCH = 25

    def __init__(self, amqp_url: str):
        self._url = amqp_url
        self._finished: list[Settings] = []

    def finished(self, settings: Settings) -> None:
        self._finished.append(settings)
        if len(self._finished) >= self.BATCH:
            self.delete()

    def delete(self) -> None:
        finished, self._finished = self._finished, []
        if finished:
            _delete_topologies(self._url, finished)


@pytest.fixture(scope="session")
def used_namespaces(amqp_url: str) -> Iterator[Namespaces]:
    namespaces = Namespaces(amqp_url)
    yield namespaces
    namespaces.delete()


def fresh_settings(amqp_url: str, home: Path) -> Settings:
    """Settings on a namespace nobody else uses, with quick heartbeats and grace for tests."""
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    return replace(
        Settings(),
        amqp_url=amqp_url,
        home=home,
        namespace=namespace,
        response_exchange=f"{namespace}.job_response",
        response_queue=f"{namespace}.job_response",
        default_image=TEST_IMAGE,
        runner_id=f"{namespace}-runner",
        runner_slots=4,
        heartbeat_interval=0.5,
        runner_deadline=30.0,
        stop_grace=2.0,
        publish_timeout=5.0,
    )


@pytest.fixture
def settings(amqp_url: str, tmp_path: Path, used_namespaces: Namespaces) -> Iterator[Settings]:
    configured = fresh_settings(amqp_url, tmp_path / "home")
    yield configured
    used_namespaces.finished(configured)


def _delete_topologies(amqp_url: str, used: list[Settings]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    try:
        for settings in used:
            for kind, name in (
                ("queue", settings.events_stream),
                ("queue", f"{settings.namespace}.heartbeats"),
                ("queue", f"{settings.namespace}.snapshots"),
                ("queue", settings.response_queue),
                ("exchange", settings.response_exchange),
            ):
                if channel.is_closed:
                    channel = connection.channel()
                # Best effort: a namespace is unique, so a leftover harms nobody.
                with contextlib.suppress(pika.exceptions.AMQPError):
                    getattr(channel, f"{kind}_delete")(name)
    finally:
        if connection.is_open:
            connection.close()
