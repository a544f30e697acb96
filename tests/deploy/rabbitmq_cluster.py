"""A RabbitMQ cluster of three nodes on this machine, from the rabbitmq-server package installed
here, apart from the machine's own node: their own names, ports, data, logs and Erlang cookie.

Every node listens on loopback only. A `Balancer` in front of them is what docs/deploy.md puts
there: a TCP load balancer that sends each connection to the first node that answers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

SERVER = Path("/usr/lib/rabbitmq/bin")  # Debian's rabbitmq-server, without its su wrapper


@dataclass
class Node:
    name: str  # e.g. fr1-abcd@localhost
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    def ctl(self, *arguments: str, tool: str = "rabbitmqctl", timeout: float = 120) -> str:
        result = subprocess.run(
            [str(SERVER / tool), "-q", "-n", self.name, *arguments],
            env=self.env,
            cwd=Path(self.env["RABBITMQ_PID_FILE"]).parent,  # its crash dumps, if any
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"{tool} {' '.join(arguments)}: {result.stderr}"
        return result.stdout


def require_rabbitmq_server() -> None:
    if os.geteuid() != 0 or not (SERVER / "rabbitmq-server").exists():
        pytest.skip("a RabbitMQ cluster here needs root and Debian's rabbitmq-server")


@contextlib.contextmanager
def rabbitmq_cluster(base: Path, size: int = 3) -> Iterator[list[Node]]:
    require_rabbitmq_server()
    tag = uuid.uuid4().hex[:6]
    home = base / "home"  # the CLI's and the nodes' Erlang cookie
    home.mkdir(parents=True)
    (home / ".erlang.cookie").write_text(uuid.uuid4().hex)
    (home / ".erlang.cookie").chmod(0o400)
    (base / "rabbitmq-env.conf").write_text("")  # not the machine's node's (its name, its port)
    nodes = []
    for index in range(1, size + 1):
        data = base / f"node{index}"
        data.mkdir()
        port = free_port()
        (data / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{port}\nlog.file.level = info\n"
        )
        (data / "enabled_plugins").write_text("[].\n")
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": f"fr{index}-{tag}@localhost",
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
            "RABBITMQ_LOG_BASE": str(data / "log"),
            "RABBITMQ_PID_FILE": str(data / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        nodes.append(Node(env["RABBITMQ_NODENAME"], port, env))
    try:
        for node in nodes:
            output = open(base / f"{node.name}.out", "ab")  # noqa: SIM115 - closed with the node
            # A session of its own: the script's Erlang VM is its child, and goes with its group.
            node.process = subprocess.Popen(
                [str(SERVER / "rabbitmq-server")],
                env=node.env,
                stdout=output,
                stderr=output,
                start_new_session=True,
                cwd=base,  # where a stopped node's crash dumps land, not the checkout
            )
        for node in nodes:
            # Until the node has written its pid file, then until it has booted.
            node.ctl("wait", node.env["RABBITMQ_PID_FILE"], "--timeout", "120", timeout=150)
        first, *others = nodes
        for node in others:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait()
        for log in sorted([*base.glob("*.out"), *base.glob("node*/log/*.log")]):
            print(f"--- {log}\n{log.read_text(errors='replace')[-2000:]}")
        shutil.rmtree(base, ignore_errors=True)


def stop(node: Node) -> None:
    """Stop a node as an operator would (its Erlang VM goes)."""
    node.ctl("stop", timeout=60)
    assert node.process is not None
    node.process.wait(timeout=60)


class Balancer:
    """A TCP load balancer on loopback: each connection goes to the first node that accepts it."""

    def __init__(self, nodes: list[Node]):
        self._targets = [("127.0.0.1", node.port) for node in nodes]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            _close(sock)

    def _upstream(self) -> socket.socket | None:
        for target in self._targets:
            with contextlib.suppress(OSError):
                upstream = socket.create_connection(target, timeout=2)
                upstream.settimeout(None)
                return upstream
        return None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = self._upstream()
            if upstream is None:
                _close(client)
                continue
            self._sockets += (client, upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    _close(src)
    _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
