"""`freight up`: every service as its own process, each output line tagged with its name.

Ctrl-C (or SIGTERM) stops them all; if one dies, the others are stopped too, so nothing is left
half-running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

COLORS = ("\033[36m", "\033[33m", "\033[35m", "\033[32m")
RESET = "\033[0m"


def run_services(services: Sequence[str]) -> int:
    width = max(len(s) for s in services)
    color = sys.stdout.isatty()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    lock = threading.Lock()

    def pump(name: str, proc: subprocess.Popen[bytes], tag: str) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with lock:
                sys.stdout.write(f"{tag} | {line.decode(errors='replace')}")
                sys.stdout.flush()

    for i, name in enumerate(services):
        tag = name.ljust(width)
        if color:
            tag = f"{COLORS[i % len(COLORS)]}{tag}{RESET}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "freight.cli", "serve", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        procs[name] = proc
        threading.Thread(target=pump, args=(name, proc, tag), daemon=True).start()

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    exit_code = 0
    try:
        while not stopping.is_set():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(
                        f"freight: {name} exited with code {proc.returncode}; stopping all",
                        file=sys.stderr,
                    )
                    exit_code = proc.returncode or 1
                    stopping.set()
                    break
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return exit_code
