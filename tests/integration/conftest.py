"""What the integration tests share: the topology of the test's namespace, and a publisher."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings


@pytest.fixture
def topology(settings: Settings) -> Topology:
    return Topology.from_settings(settings)


@pytest.fixture
def publisher(settings: Settings, topology: Topology) -> Iterator[Publisher]:
    publisher = Publisher(settings.amqp_url, topology, "test")
    yield publisher
    publisher.close()
