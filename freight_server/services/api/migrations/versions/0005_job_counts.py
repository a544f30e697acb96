"""Counts of jobs by owner and status, and an index for one owner's whole history.

The counts start from the views already projected.

Revision ID: api_0005
Revises: api_0004
"""

import sqlalchemy as sa
from alembic import op

revision = "api_0005"
down_revision = "api_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_job_counts",
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("jobs", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO api_job_counts (owner, status, jobs) "
        "SELECT owner, status, count(*) FROM api_jobs GROUP BY owner, status"
    )
    op.create_index("api_jobs_owner_position", "api_jobs", ["owner", "position"])


def downgrade() -> None:
    op.drop_index("api_jobs_owner_position", "api_jobs")
    op.drop_table("api_job_counts")
