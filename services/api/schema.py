"""The API's read model: the job views, every raw event (history outlives the stream's
retention), and an outbox so each end of a job is announced on `job_response` at least once."""

import sqlalchemy as sa

from shared.db import dead_letters_table, offsets_table

metadata = sa.MetaData()

jobs = sa.Table(
    "api_jobs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("view", sa.JSON, nullable=False),
    sa.Index("api_jobs_status_position", "status", "position"),
)

events = sa.Table(
    "api_events",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("job_id", sa.String(36), nullable=True, index=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
)

outbox = sa.Table(
    "api_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
)

offsets = offsets_table(metadata, "api")
dead_letters = dead_letters_table(metadata, "api")
