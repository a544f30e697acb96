"""Hostile jobs and hostile users, against Freight as deployed: tokens required, jobs confined.

Each hostile job must be contained and end with a clear status; each hostile user must learn
nothing (404 as for a missing job, 401 without saying why). Nothing here sends a packet beyond
loopback: the network probes aim at 127.0.0.1, which in a job's own network namespace is only
the job itself.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from freight_server.shared.config import Settings
from tests.conftest import TEST_IMAGE
from tests.e2e.conftest import (
    Cluster,
    User,
    docker_client,
    free_port,
    running_cluster,
    service_env,
)

PIDS_LIMIT = 64
DEFAULT_MEMORY_MB = 48
NOBODY = 65534


@pytest.fixture(scope="module")
def secured(
    module_cluster_settings: Settings, tokens_file: Path, tokens: dict[str, str], tmp_path_factory
) -> Iterator[Cluster]:
    """The whole system with a tokens file, its runner holding jobs to a small pids limit and a
    small default memory limit."""
    runner = {"job_pids_limit": PIDS_LIMIT, "job_default_memory_mb": DEFAULT_MEMORY_MB}

    logs = tmp_path_factory.mktemp("logs")
    overrides = {"api": {"api_tokens_file": tokens_file}, "runner": runner}
    with running_cluster(module_cluster_settings, logs, overrides=overrides) as cluster:
        yield cluster


def run_to_end(who: User, command: str, **fields) -> tuple[dict, str]:
    job_id = who.submit(command, timeout=60, **fields)
    job = who.wait_for(job_id, "COMPLETE", "FAILED")
    return job, who.get(f"/jobs/{job_id}/logs").text


# -- what a job may touch --------------------------------------------------------------------------

FORK_BOMB = """
d=/sys/fs/cgroup/pids; [ -f $d/pids.max ] || d=/sys/fs/cgroup
read max < $d/pids.max
# Each copy forks for ever: at the limit, forks fail and are tried again, so the count stays
# at the limit (a bomb whose copies exit when a fork fails can collapse before it is seen).
bomb() { while :; do bomb & done; }
bomb 2>/dev/null &
# Only shell builtins from here: the bomb leaves no process to fork.
i=0; cur=0
while [ $i -lt 1000000 ]; do
    read cur < $d/pids.current; [ "$cur" -ge "$max" ] && break; i=$((i+1))
done
echo "pids $cur of $max"
"""


def test_a_fork_bomb_stops_at_the_pids_limit(alice):
    job, output = run_to_end(alice, FORK_BOMB)
    # The bomb filled its container's pids cgroup and no further; the job's end took it away.
    assert job["status"] == "COMPLETE", (job, output)
    assert f"pids {PIDS_LIMIT} of {PIDS_LIMIT}" in output
    again, _ = run_to_end(alice, "true")
    assert again["status"] == "COMPLETE"  # the runner, and its host, carry on


def test_a_memory_hog_without_a_limit_of_its_own_meets_the_default(alice):
    job, _ = run_to_end(alice, "dd if=/dev/zero of=/dev/null bs=200M count=1")
    assert job["status"] == "FAILED"
    assert job["reason"] == "out of memory"
    assert job["memory"] is None  # it asked for none: FREIGHT_JOB_DEFAULT_MEMORY_MB held it


WRITE_OUTSIDE = """
fail=0
echo h > /proc/sysrq-trigger 2>/dev/null && { echo "wrote the host's sysrq-trigger"; fail=1; }
mount -t tmpfs none /mnt 2>/dev/null && { echo "mounted a file system"; fail=1; }
mknod /tmp/disk b 8 0 2>/dev/null && { echo "made a block device"; fail=1; }
for socket in /var/run/docker.sock /run/docker.sock; do
    [ -e $socket ] && { echo "found $socket"; fail=1; }
done
grep -q '^NoNewPrivs:[[:space:]]*1' /proc/self/status || { echo "privileges may grow"; fail=1; }
grep '^CapBnd:' /proc/self/status
[ $fail = 0 ] && echo contained
exit $fail
"""


def test_a_job_cannot_write_outside_its_container(alice):
    job, output = run_to_end(alice, WRITE_OUTSIDE)
    assert job["status"] == "COMPLETE", output
    assert "contained" in output
    # CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETGID, SETUID and nothing else (docs/security.md).
    assert "CapBnd:\t00000000000000eb" in output


def test_a_job_has_no_network(alice, secured):
    api_port = secured.settings.api_bind.rsplit(":", 1)[1]
    probe = f"""
fail=0
# On the host this would be Freight's API; in the job's namespace 127.0.0.1 is the job alone.
wget -q -T 2 -O /dev/null http://127.0.0.1:{api_port}/healthz && {{ echo "reached it"; fail=1; }}
ping -c 1 -W 1 127.0.0.1 >/dev/null 2>&1 && {{ echo "opened a raw socket"; fail=1; }}
interfaces=$(grep -c ':' /proc/net/dev)
[ "$interfaces" = 1 ] || {{ echo "interfaces: $interfaces"; fail=1; }}
routes=$(wc -l < /proc/net/route)
[ "$routes" = 1 ] || {{ echo "a route out"; fail=1; }}
[ $fail = 0 ] && echo isolated
exit $fail
"""
    job, output = run_to_end(alice, probe)
    assert job["status"] == "COMPLETE", output
    assert "isolated" in output


def euid_program() -> bytes:
    """A 132-byte x86-64 Linux program that exits with its effective uid (mod 256): 0 if a
    setuid-root file made it root, 254 if it stayed nobody (65534)."""
    code = bytes.fromhex(
        "b86b000000"  # mov eax, 107 (geteuid)
        "0f05"  # syscall
        "89c7"  # mov edi, eax
        "b83c000000"  # mov eax, 60 (exit)
        "0f05"  # syscall
    )
    base, headers = 0x400000, 64 + 56
    elf = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    elf += struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + headers, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    size = headers + len(code)
    elf += struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return elf + code


# As root, make the program setuid root; then run it as nobody (busybox su, as root, needs no
# password) and report the uid it ran with.
SETUID_ATTEMPT = """
chown 0:0 euid && chmod 4755 euid || exit 3
su -s /job/euid nobody
echo "euid $?"
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe program is x86-64 code")
def test_a_setuid_program_gains_nothing(alice, secured):
    response = alice.post(
        "/jobs",
        data={"command": SETUID_ATTEMPT, "timeout": "60"},
        files={"file[]": ("euid", euid_program())},
    )
    assert response.status_code == 201, response.text
    job = alice.wait_for(response.json()["job_id"], "COMPLETE", "FAILED")
    output = alice.get(f"/jobs/{job['job_id']}/logs").text
    assert job["status"] == "COMPLETE", output
    assert f"euid {NOBODY % 256}" in output  # no-new-privileges: the setuid bit was ignored
    # The probe is honest: in a container without Freight's confinement it does become root.
    assert unconfined_setuid_euid(secured.settings.namespace) == 0


def unconfined_setuid_euid(namespace: str) -> int:
    client = docker_client()
    container = client.containers.create(
        TEST_IMAGE,
        ["sh", "-c", SETUID_ATTEMPT],
        working_dir="/job",
        network_mode="none",
        labels={"freight.namespace": namespace},  # removed with the cluster's containers
    )
    try:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            info = tarfile.TarInfo("euid")
            info.size, info.mode = len(euid_program()), 0o755
            tar.addfile(info, io.BytesIO(euid_program()))
        container.put_archive("/job", archive.getvalue())
        container.start()
        container.wait(timeout=30)
        output = container.logs().decode()
        return int(output.split("euid ")[1].split()[0])
    finally:
        container.remove(force=True)


# -- who may do what -------------------------------------------------------------------------------


def as_missing(who: User, path: str, job_id: str, method: str = "GET") -> tuple[int, dict]:
    """What `who` is told about a job that does not exist, at the same route."""
    missing = str(uuid.uuid4())
    response = who.request(method, path.replace(job_id, missing))
    body = response.json()
    body["message"] = body["message"].replace(missing, job_id)
    return response.status_code, body


def test_another_users_job_its_files_logs_and_events_are_missing_to_them(alice, bob, root):
    job_id = alice.submit("echo private > out.txt; echo printed")
    assert alice.wait_for(job_id, "COMPLETE", "FAILED")["status"] == "COMPLETE"

    for path in (
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/events",
        f"/jobs/{job_id}/logs",
        f"/jobs/{job_id}/files?path=/job/out.txt",
        f"/files?job_id={job_id}&path=/job/out.txt",
        f"/jobs/{job_id}/files?path=/job",
    ):
        response = bob.get(path)
        assert response.status_code == 404, (path, response.text)
        # Word for word what a missing job gets: nothing tells bob the id exists.
        assert (404, response.json()) == as_missing(bob, path, job_id), path

    listed = bob.get("/jobs", params={"status": "all"}).json()
    assert job_id not in [j["job_id"] for j in listed["results"]]

    # Its owner, and an admin, see it all.
    for who in (alice, root):
        assert who.get(f"/jobs/{job_id}/files", params={"path": "/job/out.txt"}).text == "private\n"
        assert who.get(f"/jobs/{job_id}/logs").text == "printed\n"
    assert alice.get(f"/jobs/{job_id}").json()["owner"] == "alice"


def test_cancelling_another_users_job_is_missing_and_changes_nothing(alice, bob):
    job_id = alice.submit("sleep 30")
    alice.wait_for(job_id, "RUNNING")

    response = bob.delete(f"/jobs/{job_id}")
    assert response.status_code == 404
    assert (404, response.json()) == as_missing(bob, f"/jobs/{job_id}", job_id, "DELETE")

    events = [e["type"] for e in alice.get(f"/jobs/{job_id}/events").json()["events"]]
    assert "JobCancelRequested" not in events
    assert alice.get(f"/jobs/{job_id}").json()["status"] == "RUNNING"
    assert alice.delete(f"/jobs/{job_id}").status_code == 202
    assert alice.wait_for(job_id, "FAILED")["reason"] == "cancelled"


def test_a_missing_or_wrong_token_is_401_and_says_no_more(secured, tokens):
    alice_token = tokens["alice"]
    headers = {
        "no header": {},
        "an unknown token": {"Authorization": "Bearer frt_" + "x" * 43},
        "a token one character off": {
            "Authorization": f"Bearer {alice_token[:-1]}{'B' if alice_token[-1] == 'A' else 'A'}"
        },
        "another scheme": {"Authorization": f"Basic {alice_token}"},
        "an empty bearer": {"Authorization": "Bearer "},
    }
    answers = set()
    for route in ("/jobs", "/jobs/x", "/jobs/x/logs", "/files?job_id=x&path=/", "/metrics"):
        for what, header in headers.items():
            response = requests.get(f"{secured.url}{route}", headers=header)
            assert response.status_code == 401, (route, what)
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), (route, what)
            answers.add(response.text)
    refused = requests.post(f"{secured.url}/jobs", json={"command": "true"})
    assert refused.status_code == 401
    answers.add(refused.text)
    assert len(answers) == 1, answers  # one answer, whatever was wrong
    # The probes need none.
    assert requests.get(f"{secured.url}/healthz").status_code == 200
    assert requests.get(f"{secured.url}/readyz").status_code != 401


def test_without_tokens_it_refuses_to_listen_beyond_loopback(tmp_path: Path, settings: Settings):
    env = service_env(settings, api_bind=f"0.0.0.0:{free_port()}", home=tmp_path)
    env.pop("FREIGHT_API_TOKENS_FILE", None)
    finished = subprocess.run(
        [sys.executable, "-m", "freight.cli", "serve", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 2, output
    assert "refusing FREIGHT_API_BIND=0.0.0.0" in output
    assert "FREIGHT_API_TOKENS_FILE" in output
    assert "Listening at" not in output  # gunicorn never started, so nothing was bound
