"""The API scenario's baseline: what this machine, this client and this HTTP stack reach with
no Freight work at all.

A falcon app on gunicorn with the API's own server settings (gthread, the same workers, threads
and keep-alive as freight_server/services/api/main.py), whose `POST /jobs` reads and parses the body
(JSON, or every part of a multipart form) and answers 201 with a small JSON document: no token, no
validation, no database, no RabbitMQ. Freight's submits per second over this one's, at the same
number of clients in the same run, is the share of the physical limit Freight keeps.

    python -m bench.ceiling --bind 127.0.0.1:5001 --workers 1 --threads 128
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import falcon
import requests
from gunicorn.app.base import BaseApplication

from bench.cluster import free_port, wait_for


class Submit:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.content_type and req.content_type.startswith(falcon.MEDIA_MULTIPART):
            form = req.get_media()
            fields = {part.name: len(part.stream.read()) for part in form}
        else:
            fields = dict(req.get_media())
        resp.status = falcon.HTTP_201
        resp.media = {"job_id": str(uuid.uuid4()), "status": "QUEUED", "fields": len(fields)}


class Alive:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


def create_app() -> falcon.App:
    app = falcon.App()
    multipart = app.req_options.media_handlers[falcon.MEDIA_MULTIPART]
    multipart.parse_options.max_body_part_count = 0  # type: ignore[attr-defined]
    app.add_route("/jobs", Submit())
    app.add_route("/healthz", Alive())
    return app


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    """freight_server/services/api/main.py's server settings, so that only the app differs."""

    def __init__(self, bind: str, workers: int, threads: int):
        self._options = {"bind": bind, "workers": workers, "threads": threads}
        super().__init__()

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)
        self.cfg.set("worker_class", "gthread")
        self.cfg.set("timeout", 60)
        self.cfg.set("graceful_timeout", 10)
        self.cfg.set("keepalive", 5)
        self.cfg.set("accesslog", None)
        self.cfg.set("limit_request_line", 8190)
        self.cfg.set("limit_request_field_size", 16384)
        self.cfg.set("loglevel", "warning")

    def load(self) -> Any:
        return create_app()


class Ceiling:
    """The minimal app as a process of its own, as the API is one."""

    def __init__(self, workers: int, threads: int, log: Path):
        self.url = ""
        self._args = {"workers": workers, "threads": threads}
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Ceiling:
        bind = f"127.0.0.1:{free_port()}"
        self.url = f"http://{bind}"
        self._log.parent.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.ceiling", "--bind", bind]
            + [f"--{name}={value}" for name, value in self._args.items()],
            stdout=open(self._log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(self._alive, 30, "the baseline app to answer")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()

    def _alive(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=128)
    args = parser.parse_args(argv)
    _Gunicorn(args.bind, args.workers, args.threads).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
