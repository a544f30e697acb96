"""What each attempt of a job saved, for GET /files after it ended.

Revision ID: api_0003
Revises: api_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "api_0003"
down_revision = "api_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_job_files",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("path_key", sa.String(40), primary_key=True),
        sa.Column("parent_key", sa.String(40), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("modified", sa.String(40), nullable=True),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("skipped", sa.Text, nullable=True),
    )
    op.create_index("api_job_files_parent", "api_job_files", ["job_id", "attempt", "parent_key"])


def downgrade() -> None:
    op.drop_index("api_job_files_parent", "api_job_files")
    op.drop_table("api_job_files")
