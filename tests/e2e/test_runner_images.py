"""The runner prunes the images it pulled once none of its jobs used them for a while: with the
real engine, on images tagged here from the test image and recorded as pulled long ago."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import docker.errors
import pytest
import sqlalchemy as sa

from freight_server.services.runner.executor import DockerExecutor
from freight_server.services.runner.images import ImagePruner, PulledImages
from freight_server.shared.db import create_engine, migrate
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import docker_client

KEEP_FOR = 3600.0
LONG_AGO = datetime(2030, 1, 1, tzinfo=UTC)
NOW = LONG_AGO + timedelta(seconds=KEEP_FOR + 1)
OWNER = "freight-test.owner"  # the label of this module's containers


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'runner.db'}")
    migrate(engine, "runner")
    yield engine
    engine.dispose()


@pytest.fixture
def tags() -> Iterator[dict[str, str]]:
    """Names of the test image that nothing else uses; removed afterwards, with the containers
    the test made (labelled with them: an `ancestor` filter would match every container of the
    test image, other tests' too)."""
    client = docker_client()
    repository = f"freight-test/prune-{uuid.uuid4().hex[:10]}"
    names = {kind: f"{repository}:{kind}" for kind in ("unused", "in-use")}
    for name in names.values():
        client.images.get(TEST_IMAGE).tag(name)
    yield names
    for container in client.containers.list(
        all=True, filters={"label": f"{OWNER}={repository}"}, ignore_removed=True
    ):
        container.remove(force=True)
    for name in names.values():
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(name)


def exists(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def test_pulled_images_unused_for_long_are_pruned_but_not_those_in_use(engine, tags):
    client = docker_client()
    live = client.containers.create(
        tags["in-use"],
        ["sleep", "300"],
        network_mode="none",
        labels={OWNER: tags["in-use"].split(":")[0]},
    )
    live.start()
    images = PulledImages(engine, "runner-a", clock=lambda: LONG_AGO)
    for image in (tags["unused"], tags["in-use"], TEST_IMAGE):
        images.pulled(image)
    pruner = ImagePruner(
        PulledImages(engine, "runner-a", clock=lambda: NOW),
        DockerExecutor(client),
        keep_for=KEEP_FOR,
        protected=[TEST_IMAGE],  # the runner's FREIGHT_DEFAULT_IMAGE
        clock=lambda: NOW,
    )

    assert pruner.prune() == [tags["unused"]]
    assert not exists(client, tags["unused"])
    assert exists(client, tags["in-use"]) and exists(client, TEST_IMAGE)
    # Seen in use, its clock started again; the default image is kept, not forgotten.
    assert images.unused_since(NOW) == [TEST_IMAGE]
    assert set(images.unused_since(NOW + timedelta(seconds=1))) == {tags["in-use"], TEST_IMAGE}


def test_images_used_recently_are_kept(engine, tags):
    client = docker_client()
    images = PulledImages(engine, "runner-a", clock=lambda: LONG_AGO)
    images.pulled(tags["unused"])
    images.used(tags["unused"], at=NOW - timedelta(seconds=1))
    pruner = ImagePruner(images, DockerExecutor(client), KEEP_FOR, [], clock=lambda: NOW)

    assert pruner.prune() == []
    assert exists(client, tags["unused"])
