"""Settings, read once from `FREIGHT_*` environment variables (the README's config table)."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A setting has a value Freight cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    home: Path = Path(".freight")
    namespace: str = "freight"
    response_exchange: str = "job_response"
    response_queue: str = "job_response"
    database_url: str | None = None
    service_database_urls: Mapping[str, str] | None = None
    api_bind: str = "127.0.0.1:5000"
    api_workers: int = 1
    api_threads: int = 32
    default_image: str = "busybox:stable"
    runner_id: str = socket.gethostname()
    runner_slots: int = os.cpu_count() or 1
    runner_deadline: float = 30.0
    heartbeat_interval: float = 5.0
    stop_grace: float = 10.0
    job_network: str = "none"
    job_workdir: str = "/job"
    max_request_bytes: int = 10 * 1024**3
    publish_timeout: float = 5.0
    log_level: str = "INFO"

    @property
    def events_stream(self) -> str:
        return f"{self.namespace}.events"

    def database_url_for(self, service: str) -> str:
        """Each service keeps its own database; one shared URL also works (tables are prefixed)."""
        per_service = (self.service_database_urls or {}).get(service)
        if per_service:
            return per_service
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / f'{service}.db').resolve()}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()

        def text(name: str, default: str) -> str:
            return env.get(f"FREIGHT_{name}", "").strip() or default

        def number(name: str, default: float, kind: type = float, minimum: float = 0) -> float:
            raw = env.get(f"FREIGHT_{name}", "").strip()
            if not raw:
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"FREIGHT_{name}={raw!r} is not a {kind.__name__}") from None
            if value < minimum:
                raise ConfigError(f"FREIGHT_{name}={raw!r} must be at least {minimum}")
            return value

        services = ("api", "scheduler", "runner", "filestore")
        return cls(
            amqp_url=text("AMQP_URL", defaults.amqp_url),
            home=Path(text("HOME", str(defaults.home))).expanduser(),
            namespace=text("NAMESPACE", defaults.namespace),
            response_exchange=text("RESPONSE_EXCHANGE", defaults.response_exchange),
            response_queue=text("RESPONSE_QUEUE", defaults.response_queue),
            database_url=env.get("FREIGHT_DATABASE_URL") or None,
            service_database_urls={
                s: env[f"FREIGHT_{s.upper()}_DATABASE_URL"]
                for s in services
                if env.get(f"FREIGHT_{s.upper()}_DATABASE_URL")
            },
            api_bind=text("API_BIND", defaults.api_bind),
            api_workers=int(number("API_WORKERS", defaults.api_workers, int, 1)),
            api_threads=int(number("API_THREADS", defaults.api_threads, int, 1)),
            default_image=text("DEFAULT_IMAGE", defaults.default_image),
            runner_id=text("RUNNER_ID", defaults.runner_id),
            runner_slots=int(number("RUNNER_SLOTS", defaults.runner_slots, int, 1)),
            runner_deadline=number("RUNNER_DEADLINE", defaults.runner_deadline, minimum=0.1),
            heartbeat_interval=number(
                "HEARTBEAT_INTERVAL", defaults.heartbeat_interval, minimum=0.05
            ),
            stop_grace=number("STOP_GRACE", defaults.stop_grace),
            job_network=text("JOB_NETWORK", defaults.job_network),
            job_workdir=text("JOB_WORKDIR", defaults.job_workdir),
            max_request_bytes=int(number("MAX_UPLOAD_BYTES", defaults.max_request_bytes, int)),
            publish_timeout=number("PUBLISH_TIMEOUT", defaults.publish_timeout, minimum=0.1),
            log_level=text("LOG_LEVEL", defaults.log_level).upper(),
        )
