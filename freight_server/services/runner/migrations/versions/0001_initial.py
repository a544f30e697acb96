"""The runner's projection and its launched attempts.

Revision ID: runner_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from freight_server.shared.db import create_tracking_tables, drop_tracking_tables

revision = "runner_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runner_jobs",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("runner", sa.String(200), nullable=True),
        sa.Column("view", sa.JSON, nullable=False),
    )
    op.create_index("runner_jobs_runner_status", "runner_jobs", ["runner", "status"])
    op.create_table(
        "runner_attempts",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("runner_id", sa.String(200), nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    create_tracking_tables(op, "runner")


def downgrade() -> None:
    drop_tracking_tables(op, "runner")
    op.drop_table("runner_attempts")
    op.drop_table("runner_jobs")
