"""`freight serve runner`: one per host; runs the attempts the scheduler gives it."""

from __future__ import annotations

import logging

from services.runner.attempt import RunnerContext
from services.runner.executor import Confinement, DockerExecutor, Executor
from services.runner.files import start_file_service
from services.runner.gpus import host_resources, inventory_for
from services.runner.local import LocalExecutor
from services.runner.projection import RunnerProjection
from shared.bus import Publisher, Topology
from shared.config import Settings
from shared.consumer import StreamConsumer
from shared.db import create_engine, migrate
from shared.events import EventFactory, utcnow
from shared.metrics import export_projection
from shared.runtime import stop_on_signals
from shared.secret_env import SecretBox

log = logging.getLogger(__name__)


def make_executor(settings: Settings) -> Executor:
    if settings.runner_executor == "local":
        return LocalExecutor(settings.home / "local-jobs")
    return DockerExecutor.from_env(
        pool_size=settings.runner_slots * 2 + 4, confinement=Confinement.from_settings(settings)
    )


def serve(settings: Settings) -> None:
    executor = make_executor(settings)
    resources = host_resources(
        inventory_for(settings.runner_id, settings.runner_gpus, settings.runner_gpu_memory_mb),
        cpus=settings.runner_cpus,
        memory_mb=settings.runner_memory_mb,
    )
    engine = create_engine(settings.database_url_for("runner"))
    migrate(engine, "runner")
    topology = Topology.from_settings(settings)
    publisher = Publisher(
        settings.amqp_url, topology, f"runner:{settings.runner_id}", settings.publish_timeout
    )
    files, files_node = start_file_service(settings, executor, topology)
    ctx = RunnerContext(
        runner_id=settings.runner_id,
        namespace=settings.namespace,
        executor=executor,
        log=publisher,
        new_event=EventFactory(f"runner:{settings.runner_id}"),
        network=settings.job_network,
        workdir=settings.job_workdir,
        stop_grace=settings.stop_grace,
        simulated_gpus=resources.simulated_gpus,
        files=files,
        secrets=SecretBox.from_settings(settings),
    )
    projection = RunnerProjection(
        engine,
        ctx,
        slots=settings.runner_slots,
        heartbeat_interval=settings.heartbeat_interval,
        clock=utcnow,
        resources=resources,
    )
    log.info(
        "runner %s (%s executor): %d slots, %d %sGPUs, %g CPUs, %d MiB",
        settings.runner_id,
        settings.runner_executor,
        settings.runner_slots,
        len(resources.gpus),
        "simulated " if resources.simulated_gpus else "",
        resources.cpus,
        resources.memory_mb,
    )
    on_committed, _ = export_projection(settings.amqp_url, topology, engine, projection)
    consumer = StreamConsumer(
        settings.amqp_url, topology, engine, projection, on_committed=on_committed
    )
    try:
        # Containers outlive this process on purpose: a restarted runner re-adopts them.
        consumer.run(stop_on_signals())
    finally:
        files_node.close()
        publisher.close()
