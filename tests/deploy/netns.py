"""Other hosts on this machine: network namespaces joined to this one by a veth pair each.

A process in such a namespace has its own loopback and reaches this machine only over its link
(a /30 of link-local addresses, 169.254.0.0/16, that never leave the machine); dropping the host's
end of the link cuts it off as a pulled cable would. A `Relay` on this side of the link forwards
one port to a loopback service (RabbitMQ here listens on 127.0.0.1 only).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def require_netns() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's `ip`")


def ip(*arguments: str) -> None:
    subprocess.run(["ip", *arguments], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Host:
    namespace: str
    link: str  # the link's end on this side, which `cut` drops
    address: str  # this side's address, as the host in the namespace reaches it
    own_address: str  # the namespaced host's address

    def command(self, *argv: str) -> list[str]:
        """argv, run on that host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        ip("link", "set", self.link, "down")


@contextlib.contextmanager
def other_host(name: str) -> Iterator[Host]:
    """A namespace for host `name` (a letter or two) and its link, removed afterwards."""
    require_netns()
    tag = f"{name}{os.getpid() % 10000}"  # interface names: 15 characters at most
    subnet = f"169.254.{random.randint(1, 254)}"  # noqa: S311 - not for security
    host = Host(f"freight-{tag}", f"fr-{tag}", f"{subnet}.1", f"{subnet}.2")
    inside = f"fr-{tag}-in"
    ip("netns", "add", host.namespace)
    try:
        ip(
            "link",
            "add",
            host.link,
            "type",
            "veth",
            "peer",
            "name",
            inside,
            "netns",
            host.namespace,
        )
        ip("addr", "add", f"{host.address}/30", "dev", host.link)
        ip("link", "set", host.link, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.own_address}/30", "dev", inside)
        ip("-n", host.namespace, "link", "set", inside, "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        yield host
    finally:
        ip("netns", "delete", host.namespace)  # takes the veth pair with it


class Relay:
    """Forwards connections to `listen` (on this side of a link) to `target`."""

    def __init__(self, listen: str, target: tuple[str, int]):
        self._target = target
        self._listener = socket.create_server((listen, 0))
        self.address = listen
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self.connections = 0  # accepted so far
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.connections += 1
            self._sockets += (client, upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
