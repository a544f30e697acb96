"""The scheduler's projection: every job's view and every runner's last heartbeat."""

import sqlalchemy as sa

from freight_server.shared.db import dead_letters_table, offsets_table

metadata = sa.MetaData()

jobs = sa.Table(
    "scheduler_jobs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("runner", sa.String(200), nullable=True),
    sa.Column("view", sa.JSON, nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("scheduler_jobs_status_position", "status", "position"),
    sa.Index("scheduler_jobs_runner_status", "runner", "status"),
    sa.Index("scheduler_jobs_finished_at", "finished_at"),
)

runners = sa.Table(
    "scheduler_runners",
    metadata,
    sa.Column("runner_id", sa.String(200), primary_key=True),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("capacity", sa.JSON, nullable=False),
    sa.Column("lost", sa.Boolean, nullable=False, default=False),
)

# Each owner's quota (OwnerQuotaSet): None is no bound.
quotas = sa.Table(
    "scheduler_quotas",
    metadata,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("max_gpus", sa.Integer, nullable=True),
    sa.Column("max_running", sa.Integer, nullable=True),
)

offsets = offsets_table(metadata, "scheduler")
dead_letters = dead_letters_table(metadata, "scheduler")
