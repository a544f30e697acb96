"""What the integration tests share: the topology of the test's namespace, a publisher, and the
API's database migrated (on SQLite and on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.db import create_engine, migrate


@pytest.fixture
def topology(settings: Settings) -> Topology:
    return Topology.from_settings(settings)


@pytest.fixture
def publisher(settings: Settings, topology: Topology) -> Iterator[Publisher]:
    publisher = Publisher(settings.amqp_url, topology, "test")
    yield publisher
    publisher.close()


@pytest.fixture
def api_engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    migrate(engine, "api")
    yield engine
    engine.dispose()
