"""`freight serve runner`: one per host; runs the attempts the scheduler gives it."""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa

from freight_server.services.runner.attempt import RunnerContext
from freight_server.services.runner.executor import Confinement, DockerExecutor, Executor
from freight_server.services.runner.files import start_file_service
from freight_server.services.runner.gpus import host_resources, inventory_for
from freight_server.services.runner.housekeeping import EndedJobs, Housekeeping
from freight_server.services.runner.images import ImagePruner, PulledImages
from freight_server.services.runner.local import LocalExecutor
from freight_server.services.runner.projection import RunnerProjection
from freight_server.shared.bus import Publisher, Topology
from freight_server.shared.config import Settings
from freight_server.shared.consumer import StreamConsumer
from freight_server.shared.db import create_engine, migrate
from freight_server.shared.events import EventFactory, utcnow
from freight_server.shared.metrics import export_projection
from freight_server.shared.runtime import stop_on_signals
from freight_server.shared.secret_env import SecretBox

log = logging.getLogger(__name__)


def make_executor(settings: Settings, on_pull: Callable[[str], None] | None = None) -> Executor:
    if settings.runner_executor == "local":
        return LocalExecutor(settings.home / "local-jobs")
    return DockerExecutor.from_env(
        pool_size=settings.runner_slots * 2 + 4,
        confinement=Confinement.from_settings(settings),
        on_pull=on_pull,
    )


def make_housekeeping(
    settings: Settings, engine: sa.Engine, executor: Executor, images: PulledImages
) -> Housekeeping:
    chores: list[Callable[[], object]] = [
        EndedJobs(engine, settings.runner_id, settings.file_retention, utcnow).prune
    ]
    if isinstance(executor, DockerExecutor) and settings.runner_image_prune_after > 0:
        pruner = ImagePruner(
            images,
            executor,
            keep_for=settings.runner_image_prune_after,
            protected=[settings.default_image],
            clock=utcnow,
        )
        chores.append(pruner.prune)
    return Housekeeping(chores)


def serve(settings: Settings) -> None:
    engine = create_engine(settings.database_url_for("runner"))
    migrate(engine, "runner")
    images = PulledImages(engine, settings.runner_id, utcnow)
    executor = make_executor(settings, on_pull=images.pulled)
    resources = host_resources(
        inventory_for(settings.runner_id, settings.runner_gpus, settings.runner_gpu_memory_mb),
        cpus=settings.runner_cpus,
        memory_mb=settings.runner_memory_mb,
    )
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
        images_used=images.used,
    )
    projection = RunnerProjection(
        engine,
        ctx,
        slots=settings.runner_slots,
        heartbeat_interval=settings.heartbeat_interval,
        clock=utcnow,
        resources=resources,
        housekeeping=make_housekeeping(settings, engine, executor, images),
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
        settings.amqp_url,
        topology,
        engine,
        projection,
        on_committed=on_committed,
        dead_letter_retention=settings.file_retention,
    )
    try:
        # Containers outlive this process on purpose: a restarted runner re-adopts them.
        consumer.run(stop_on_signals())
    finally:
        files_node.close()
        publisher.close()
