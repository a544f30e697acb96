"""What the runner prunes: when each job ended (indexed, so forgetting old jobs is one cheap
delete), an index on when attempts ended, and the images the runner pulled.

Revision ID: runner_0004
Revises: runner_0003
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "runner_0004"
down_revision = "runner_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runner_jobs", sa.Column("finished_at", sa.DateTime(timezone=True)))
    # Jobs that ended before this revision count as ended now: forgotten a retention later
    # than they might be, never earlier, without reading every view.
    jobs = sa.table(
        "runner_jobs",
        sa.column("status", sa.String),
        sa.column("finished_at", sa.DateTime(timezone=True)),
    )
    op.execute(
        jobs.update()
        .where(jobs.c.status.in_(["COMPLETE", "FAILED"]))
        .values(finished_at=datetime.now(UTC))
    )
    op.create_index("runner_jobs_ended", "runner_jobs", ["projector", "finished_at"])
    op.create_index("runner_attempts_ended", "runner_attempts", ["runner_id", "finished_at"])
    op.create_table(
        "runner_images",
        sa.Column("runner_id", sa.String(200), primary_key=True),
        sa.Column("image", sa.String(500), primary_key=True),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runner_images")
    op.drop_index("runner_attempts_ended", table_name="runner_attempts")
    op.drop_index("runner_jobs_ended", table_name="runner_jobs")
    with op.batch_alter_table("runner_jobs") as batch:
        batch.drop_column("finished_at")
