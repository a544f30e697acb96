"""The runner's projection: every job's view (the same fold as everywhere), the attempts this
runner has launched, so a restart never starts one twice, and the images it pulled."""

import sqlalchemy as sa

from freight_server.shared.db import dead_letters_table, offsets_table

metadata = sa.MetaData()

jobs = sa.Table(
    "runner_jobs",
    metadata,
    # Whose projection the row belongs to: runners may share one database.
    sa.Column("projector", sa.String(200), primary_key=True),
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("runner", sa.String(200), nullable=True),
    sa.Column("view", sa.JSON, nullable=False),
    # When the job ended (the view's): rows are forgotten FREIGHT_FILE_RETENTION later.
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("runner_jobs_runner_status", "runner", "status"),
    sa.Index("runner_jobs_ended", "projector", "finished_at"),
)

attempts = sa.Table(
    "runner_attempts",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("runner_id", sa.String(200), nullable=False),
    sa.Column("launched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("runner_attempts_ended", "runner_id", "finished_at"),
)

# What FREIGHT_RUNNER_IMAGE_PRUNE_AFTER may remove: only images this runner pulled.
images = sa.Table(
    "runner_images",
    metadata,
    sa.Column("runner_id", sa.String(200), primary_key=True),
    sa.Column("image", sa.String(500), primary_key=True),
    sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
)

offsets = offsets_table(metadata, "runner")
dead_letters = dead_letters_table(metadata, "runner")
