"""Each owner's newest version of every path across their jobs, for GET /files without job_id.

The jobs and outputs already projected are indexed as the projection would have indexed them.

Revision ID: api_0007
Revises: api_0006
"""

import sqlalchemy as sa
from alembic import op

from freight_server.services.api.owner_files import record_history

revision = "api_0007"
down_revision = "api_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_owner_files",
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("path_key", sa.String(40), primary_key=True),
        sa.Column("parent_key", sa.String(40), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("modified", sa.String(40), nullable=True),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("skipped", sa.Text, nullable=True),
    )
    op.create_index("api_owner_files_parent", "api_owner_files", ["owner", "parent_key"])
    record_history(op.get_bind())


def downgrade() -> None:
    op.drop_index("api_owner_files_parent", "api_owner_files")
    op.drop_table("api_owner_files")
