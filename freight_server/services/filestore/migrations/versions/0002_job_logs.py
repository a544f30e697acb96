"""When a job's logs were deleted, so retention visits each ended job once.

Revision ID: filestore_0002
Revises: filestore_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "filestore_0002"
down_revision = "filestore_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("filestore_jobs") as batch:
        batch.add_column(sa.Column("logs_deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("filestore_jobs_ended_at", "filestore_jobs", ["ended_at"])


def downgrade() -> None:
    op.drop_index("filestore_jobs_ended_at", "filestore_jobs")
    with op.batch_alter_table("filestore_jobs") as batch:
        batch.drop_column("logs_deleted_at")
