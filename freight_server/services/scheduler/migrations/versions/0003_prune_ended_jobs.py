"""When each job ended, so that ended jobs are pruned past FREIGHT_FILE_RETENTION.

Revision ID: scheduler_0003
Revises: scheduler_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "scheduler_0003"
down_revision = "scheduler_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scheduler_jobs", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("scheduler_jobs_finished_at", "scheduler_jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("scheduler_jobs_finished_at", "scheduler_jobs")
    op.drop_column("scheduler_jobs", "finished_at")
