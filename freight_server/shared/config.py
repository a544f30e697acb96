"""Settings, read once from `FREIGHT_*` environment variables (the README's config table)."""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXECUTORS = ("docker", "local")


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


class ConfigError(ValueError):
    """A setting has a value Freight cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    # Its credentials never show in a repr (nor does the secret key's value).
    amqp_url: str = field(default="amqp://guest:guest@localhost:5672/", repr=False)
    home: Path = Path(".freight")
    namespace: str = "freight"
    response_exchange: str = "job_response"
    response_queue: str = "job_response"
    # The bound on `job_response`, so that nobody reading it cannot fill the broker's disk: past
    # this many messages the oldest go; a message older than the TTL (seconds) goes. 0: none.
    response_queue_max_length: int = 100_000
    response_queue_ttl: float = 7 * 24 * 3600.0
    database_url: str | None = None
    service_database_urls: Mapping[str, str] | None = None
    api_bind: str = "127.0.0.1:5000"
    api_workers: int = 1
    # More threads than admission slots: the excess reaches the API and is shed with a 503 at
    # once rather than queueing inside gunicorn (freight_server/services/api/admission.py).
    api_threads: int = 128
    api_max_concurrent: int = 32  # requests worked on at once, per worker
    api_admission_wait: float = 0.1  # seconds one more may wait for a turn before its 503
    default_image: str = "busybox:stable"
    runner_id: str = socket.gethostname()
    runner_slots: int = os.cpu_count() or 1
    runner_gpus: int | None = None  # simulated GPUs; None reads the real ones with NVML
    runner_gpu_memory_mb: int = 16384  # the memory each simulated GPU reports
    runner_cpus: float | None = None  # None: the host's CPU count
    runner_memory_mb: int | None = None  # None: the host's memory
    runner_executor: str = "docker"  # or "local": commands as subprocesses, no containers
    runner_image_prune_after: float = 24 * 3600.0  # seconds a pulled image is kept unused; 0: never
    runner_deadline: float = 30.0
    heartbeat_interval: float = 5.0
    heartbeat_retention: float = 3600.0  # seconds the heartbeats stream keeps them
    # The events stream's retention (docs/deploy.md): none by default; with one, services
    # joining later start from a snapshot, taken every `snapshot_interval` seconds.
    log_retention: float = 0.0
    log_max_bytes: int = 0
    log_segment_bytes: int = 64 * 1024 * 1024
    snapshot_interval: float = 24 * 3600.0
    stop_grace: float = 10.0
    job_network: str = "none"
    job_workdir: str = "/job"
    max_request_bytes: int = 10 * 1024**3
    # Files (docs/files.md): how long transfers may wait, what outputs are kept, and how long.
    transfer_timeout: float = 30.0  # a file transfer's peer silent this long: it failed
    input_deadline: float = 300.0  # inputs not in the container by then: the job fails
    output_deadline: float = 600.0  # outputs not saved by then: given up, the job says so
    max_output_bytes: int = 1024**3
    max_output_files: int = 10_000
    file_retention: float = 7 * 24 * 3600.0  # seconds a job's files outlive its end
    upload_grace: float = 3600.0  # seconds an upload is kept before a job must refer to it
    file_gc_interval: float = 60.0
    publish_timeout: float = 5.0
    api_client_timeout: float = 30.0
    # Security (docs/security.md): who may call the API, and what a job's container may touch.
    api_tokens_file: Path | None = None  # None: local use, everyone an anonymous admin
    secret_key: str | None = field(default=None, repr=False)  # seals jobs' secret_env
    allowed_images: tuple[str, ...] = ()  # fnmatch patterns; empty: any image
    # Host directories TES tasks may read file:// inputs from and write outputs to (docs/tes.md).
    tes_allowed_dirs: tuple[Path, ...] = ()
    job_pids_limit: int = 4096
    job_default_memory_mb: int = 4096  # a job that names no memory gets this; 0: no limit
    job_read_only: bool = False  # read-only root file system, a writable workdir and /tmp
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
        # Several runners may share a host and its FREIGHT_HOME: each keeps its own file.
        name = f"runner-{_file_safe(self.runner_id)}" if service == "runner" else service
        return f"sqlite:///{(self.home / f'{name}.db').resolve()}"

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
            if not math.isfinite(value) or value < minimum:
                raise ConfigError(f"FREIGHT_{name}={raw!r} must be at least {minimum}")
            return value

        def optional(name: str, kind: type, minimum: float) -> Any:
            if not env.get(f"FREIGHT_{name}", "").strip():
                return None
            return number(name, minimum, kind, minimum)

        network = text("JOB_NETWORK", defaults.job_network)
        if network == "host" or network.startswith("container:"):
            # The host's loopback holds RabbitMQ and the API: a job must never share it.
            raise ConfigError(
                f"FREIGHT_JOB_NETWORK={network!r} would share another network namespace with "
                "jobs; use none (the default) or a Docker network made for them"
            )
        executor = text("RUNNER_EXECUTOR", defaults.runner_executor).lower()
        if executor not in EXECUTORS:
            raise ConfigError(f"FREIGHT_RUNNER_EXECUTOR={executor!r} must be one of {EXECUTORS}")

        services = ("api", "scheduler", "runner", "filestore")
        return cls(
            amqp_url=_amqp_url(env, defaults.amqp_url),
            home=Path(text("HOME", str(defaults.home))).expanduser(),
            namespace=text("NAMESPACE", defaults.namespace),
            response_exchange=text("RESPONSE_EXCHANGE", defaults.response_exchange),
            response_queue=text("RESPONSE_QUEUE", defaults.response_queue),
            response_queue_max_length=int(
                number("RESPONSE_QUEUE_MAX_LENGTH", defaults.response_queue_max_length, int)
            ),
            response_queue_ttl=number("RESPONSE_QUEUE_TTL", defaults.response_queue_ttl),
            database_url=env.get("FREIGHT_DATABASE_URL") or None,
            service_database_urls={
                s: env[f"FREIGHT_{s.upper()}_DATABASE_URL"]
                for s in services
                if env.get(f"FREIGHT_{s.upper()}_DATABASE_URL")
            },
            api_bind=text("API_BIND", defaults.api_bind),
            api_workers=int(number("API_WORKERS", defaults.api_workers, int, 1)),
            api_threads=int(number("API_THREADS", defaults.api_threads, int, 1)),
            api_max_concurrent=int(
                number("API_MAX_CONCURRENT", defaults.api_max_concurrent, int, 1)
            ),
            api_admission_wait=number("API_ADMISSION_WAIT", defaults.api_admission_wait),
            default_image=text("DEFAULT_IMAGE", defaults.default_image),
            runner_id=text("RUNNER_ID", defaults.runner_id),
            runner_slots=int(number("RUNNER_SLOTS", defaults.runner_slots, int, 1)),
            runner_gpus=optional("RUNNER_GPUS", int, 0),
            runner_gpu_memory_mb=int(
                number("RUNNER_GPU_MEMORY_MB", defaults.runner_gpu_memory_mb, int, 1)
            ),
            runner_cpus=optional("RUNNER_CPUS", float, 0.01),
            runner_memory_mb=optional("RUNNER_MEMORY_MB", int, 6),
            runner_executor=executor,
            runner_image_prune_after=number(
                "RUNNER_IMAGE_PRUNE_AFTER", defaults.runner_image_prune_after
            ),
            runner_deadline=number("RUNNER_DEADLINE", defaults.runner_deadline, minimum=0.1),
            heartbeat_interval=number(
                "HEARTBEAT_INTERVAL", defaults.heartbeat_interval, minimum=0.05
            ),
            heartbeat_retention=number(
                "HEARTBEAT_RETENTION", defaults.heartbeat_retention, minimum=1
            ),
            log_retention=number("LOG_RETENTION", defaults.log_retention),
            log_max_bytes=int(number("LOG_MAX_BYTES", defaults.log_max_bytes, int)),
            log_segment_bytes=int(
                number("LOG_SEGMENT_BYTES", defaults.log_segment_bytes, int, minimum=4096)
            ),
            snapshot_interval=number("SNAPSHOT_INTERVAL", defaults.snapshot_interval, minimum=1),
            stop_grace=number("STOP_GRACE", defaults.stop_grace),
            job_network=network,
            job_workdir=text("JOB_WORKDIR", defaults.job_workdir),
            max_request_bytes=int(number("MAX_UPLOAD_BYTES", defaults.max_request_bytes, int)),
            transfer_timeout=number("TRANSFER_TIMEOUT", defaults.transfer_timeout, minimum=0.1),
            input_deadline=number("INPUT_DEADLINE", defaults.input_deadline, minimum=0.1),
            output_deadline=number("OUTPUT_DEADLINE", defaults.output_deadline, minimum=0.1),
            max_output_bytes=int(number("MAX_OUTPUT_BYTES", defaults.max_output_bytes, int)),
            max_output_files=int(number("MAX_OUTPUT_FILES", defaults.max_output_files, int)),
            file_retention=number("FILE_RETENTION", defaults.file_retention),
            upload_grace=number("UPLOAD_GRACE", defaults.upload_grace, minimum=1),
            file_gc_interval=number("FILE_GC_INTERVAL", defaults.file_gc_interval, minimum=0.1),
            publish_timeout=number("PUBLISH_TIMEOUT", defaults.publish_timeout, minimum=0.1),
            api_client_timeout=number(
                "API_CLIENT_TIMEOUT", defaults.api_client_timeout, minimum=0.1
            ),
            api_tokens_file=_path_or_none(env.get("FREIGHT_API_TOKENS_FILE")),
            secret_key=env.get("FREIGHT_SECRET_KEY", "").strip() or None,
            allowed_images=tuple(
                p.strip() for p in env.get("FREIGHT_ALLOWED_IMAGES", "").split(",") if p.strip()
            ),
            tes_allowed_dirs=tuple(
                Path(p.strip()).expanduser()
                for p in env.get("FREIGHT_TES_ALLOWED_DIRS", "").split(",")
                if p.strip()
            ),
            job_pids_limit=int(number("JOB_PIDS_LIMIT", defaults.job_pids_limit, int, 16)),
            job_default_memory_mb=int(
                number("JOB_DEFAULT_MEMORY_MB", defaults.job_default_memory_mb, int, 0)
            ),
            job_read_only=_flag(env, "JOB_READ_ONLY", defaults.job_read_only),
            log_level=text("LOG_LEVEL", defaults.log_level).upper(),
        )


def _amqp_url(env: Mapping[str, str], default: str) -> str:
    """FREIGHT_AMQP_URL, or the URL read from FREIGHT_AMQP_URL_FILE (a mounted secret, so the
    broker's password is in no environment listing)."""
    path = env.get("FREIGHT_AMQP_URL_FILE", "").strip()
    if not path:
        return env.get("FREIGHT_AMQP_URL", "").strip() or default
    try:
        url = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise ConfigError(f"FREIGHT_AMQP_URL_FILE={path!r} cannot be read: {exc}") from None
    if not url:
        raise ConfigError(f"FREIGHT_AMQP_URL_FILE={path!r} is empty")
    return url


def _path_or_none(raw: str | None) -> Path | None:
    return Path(raw.strip()).expanduser() if raw and raw.strip() else None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(f"FREIGHT_{name}", "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"FREIGHT_{name}={raw!r} must be true or false")
