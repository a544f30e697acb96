"""The API's read model.

Revision ID: api_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from freight_server.shared.db import create_tracking_tables, drop_tracking_tables

revision = "api_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_jobs",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("view", sa.JSON, nullable=False),
    )
    op.create_index("api_jobs_status_position", "api_jobs", ["status", "position"])
    op.create_table(
        "api_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_api_events_job_id", "api_events", ["job_id"])
    op.create_table(
        "api_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
    )
    create_tracking_tables(op, "api")


def downgrade() -> None:
    drop_tracking_tables(op, "api")
    for table in ("api_outbox", "api_events", "api_jobs"):
        op.drop_table(table)
