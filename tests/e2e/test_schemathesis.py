"""Property-based requests generated from GET /openapi.json (schemathesis) against the real
server: whatever they send, the API answers without a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from freight_server.shared.config import Settings
from tests.e2e.conftest import Cluster, running_cluster


@pytest.fixture(scope="module")
def served(
    module_cluster_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    def start(cluster: Cluster) -> None:
        cluster.start("filestore")
        cluster.start("api")

    logs: Path = tmp_path_factory.mktemp("logs")
    with running_cluster(module_cluster_settings, logs, start=start) as cluster:
        yield cluster


def test_no_request_gets_a_5xx(served: Cluster) -> None:
    # Driven by hand rather than by schemathesis' pytest plugin, which does not run on pytest 9.
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def answers_without_5xx(case):  # type: ignore[no-untyped-def]
            response = case.call(timeout=30)
            if case.operation.path == "/readyz" and response.status_code == 503:
                return  # "not ready yet" is that route's documented answer, not a failure
            assert response.status_code < 500, (case.as_curl_command(), response.text[:500])

        answers_without_5xx()
