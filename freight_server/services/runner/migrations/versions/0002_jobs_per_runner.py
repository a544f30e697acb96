"""Key runner_jobs by the runner whose projection a row belongs to, so several runners can share
one database. The projection is rebuilt from the log: its offsets are reset; the attempts table,
which keeps a start at most once, is kept.

Revision ID: runner_0002
Revises: runner_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "runner_0002"
down_revision = "runner_0001"
branch_labels = None
depends_on = None


def _create_jobs(keyed_by_runner: bool) -> None:
    columns = [sa.Column("job_id", sa.String(36), primary_key=True)]
    if keyed_by_runner:
        columns.insert(0, sa.Column("projector", sa.String(200), primary_key=True))
    op.create_table(
        "runner_jobs",
        *columns,
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("runner", sa.String(200), nullable=True),
        sa.Column("view", sa.JSON, nullable=False),
    )
    op.create_index("runner_jobs_runner_status", "runner_jobs", ["runner", "status"])


def upgrade() -> None:
    op.drop_index("runner_jobs_runner_status", table_name="runner_jobs")
    op.drop_table("runner_jobs")
    _create_jobs(keyed_by_runner=True)
    op.execute(sa.text("DELETE FROM runner_offsets"))


def downgrade() -> None:
    op.drop_index("runner_jobs_runner_status", table_name="runner_jobs")
    op.drop_table("runner_jobs")
    _create_jobs(keyed_by_runner=False)
    op.execute(sa.text("DELETE FROM runner_offsets"))
