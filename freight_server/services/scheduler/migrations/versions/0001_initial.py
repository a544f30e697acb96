"""The scheduler's projection.

Revision ID: scheduler_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from freight_server.shared.db import create_tracking_tables, drop_tracking_tables

revision = "scheduler_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_jobs",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("runner", sa.String(200), nullable=True),
        sa.Column("view", sa.JSON, nullable=False),
    )
    op.create_index("scheduler_jobs_status_position", "scheduler_jobs", ["status", "position"])
    op.create_index("scheduler_jobs_runner_status", "scheduler_jobs", ["runner", "status"])
    op.create_table(
        "scheduler_runners",
        sa.Column("runner_id", sa.String(200), primary_key=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capacity", sa.JSON, nullable=False),
        sa.Column("lost", sa.Boolean, nullable=False),
    )
    create_tracking_tables(op, "scheduler")


def downgrade() -> None:
    drop_tracking_tables(op, "scheduler")
    op.drop_table("scheduler_runners")
    op.drop_table("scheduler_jobs")
