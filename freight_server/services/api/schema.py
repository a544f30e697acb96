"""The API's read model: the job views, every raw event (history outlives the stream's
retention), and an outbox so each end of a job is announced on `job_response` at least once."""

import sqlalchemy as sa

from freight_server.shared.db import dead_letters_table, offsets_table

metadata = sa.MetaData()

jobs = sa.Table(
    "api_jobs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("view", sa.JSON, nullable=False),
    # The token's user who submitted it (docs/security.md): users list their own jobs only.
    sa.Column("owner", sa.String(200), nullable=False, server_default="anonymous"),
    sa.Index("api_jobs_status_position", "status", "position"),
    sa.Index("api_jobs_owner_status_position", "owner", "status", "position"),
    sa.Index("api_jobs_owner_position", "owner", "position"),  # one user's `status=all`
)

# How many jobs each owner has in each status, kept with the views: a listing's `count` without
# counting the whole filter on every page.
job_counts = sa.Table(
    "api_job_counts",
    metadata,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(16), primary_key=True),
    sa.Column("jobs", sa.BigInteger, nullable=False),
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

# Every runner's latest heartbeat, kept for /metrics (runner capacity and use).
runners = sa.Table(
    "api_runners",
    metadata,
    sa.Column("runner_id", sa.String(200), primary_key=True),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lost", sa.Boolean, nullable=False),
    sa.Column("heartbeat", sa.JSON, nullable=False),
)

# Each owner's newest version of every path across their jobs
# (freight_server/services/api/owner_files.py),
# for GET /files without job_id: one row per (owner, path), so a read never folds the jobs.
owner_files = sa.Table(
    "api_owner_files",
    metadata,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("path_key", sa.String(40), primary_key=True),
    sa.Column("parent_key", sa.String(40), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("job_id", sa.String(36), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),  # the event's, in the log
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("modified", sa.String(40), nullable=True),
    sa.Column("digest", sa.String(71), nullable=True),
    sa.Column("target", sa.Text, nullable=True),
    sa.Column("skipped", sa.Text, nullable=True),  # why it was not saved
    sa.Index("api_owner_files_parent", "owner", "parent_key"),
)

# What each owner's ended jobs used, in whole milliseconds (freight_server/services/api/usage.py).
usage = sa.Table(
    "api_usage",
    metadata,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("jobs", sa.BigInteger, nullable=False),
    sa.Column("run_ms", sa.BigInteger, nullable=False),
    sa.Column("gpu_ms", sa.BigInteger, nullable=False),
    sa.Column("cpu_ms", sa.BigInteger, nullable=False),
)

offsets = offsets_table(metadata, "api")
dead_letters = dead_letters_table(metadata, "api")
