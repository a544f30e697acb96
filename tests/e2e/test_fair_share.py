"""Fair share as two users of one GPU host see it: a user who queued a lot does not keep the
GPUs from a user who comes later, and nobody waits behind another's whole queue."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from freight_server.shared.config import Settings
from freight_server.shared.tokens import add_token
from tests.e2e.conftest import Cluster, User, running_cluster
from tests.waiting import wait_until

pytestmark = pytest.mark.docker


@pytest.fixture
def shared_host(cluster_settings: Settings, tmp_path: Path) -> Iterator[tuple[User, User]]:
    """One runner with two (simulated) GPUs; alice and bob, each with a token."""
    tokens = tmp_path / "tokens"
    alice, bob = add_token(tokens, "alice", "user"), add_token(tokens, "bob", "user")
    overrides = {"api": {"api_tokens_file": tokens}}
    cluster: Cluster
    with running_cluster(
        cluster_settings, tmp_path / "logs", {"runner_gpus": 2}, None, overrides
    ) as cluster:
        yield User(cluster.url, "alice", alice), User(cluster.url, "bob", bob)


def started(user: User, job_ids: list[str]) -> list[datetime]:
    jobs: list[dict[str, Any]] = [user.get(f"/jobs/{i}").json() for i in job_ids]
    return sorted(datetime.fromisoformat(j["started_at"]) for j in jobs if j["started_at"])


def test_a_later_user_gets_the_next_free_gpu(shared_host):
    alice, bob = shared_host
    # Alice's jobs outlast the time bob takes to queue his: the first GPU to free up comes
    # after he did.
    alices = [alice.submit("sleep 3", gpus="1") for _ in range(20)]
    wait_until(lambda: len(started(alice, alices)) == 2, timeout=60, what="two of alice's running")
    bobs = [bob.submit("sleep 1", gpus="1") for _ in range(5)]

    for job_id in bobs:
        assert bob.wait_for(job_id, "COMPLETE", timeout=90)["status"] == "COMPLETE"

    alice_starts, bob_starts = started(alice, alices), started(bob, bobs)
    # Alice's first two jobs end together: of the two GPUs they free, one goes to bob (which one
    # first, in the same pass, is a tie at zero running each), not both to alice's queue...
    assert bob_starts[0] <= alice_starts[3]
    # ...and the two shared the GPUs from then on: bob never waited behind alice's queue.
    assert len([t for t in alice_starts if t < bob_starts[-1]]) <= 2 + len(bobs) + 1
    for job_id in alices:
        alice.delete(f"/jobs/{job_id}")
