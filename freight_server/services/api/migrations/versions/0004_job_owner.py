"""Each job's owner, so a user's list is one indexed query.

Jobs projected before owners were recorded belong to "anonymous", as their views say.

Revision ID: api_0004
Revises: api_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "api_0004"
down_revision = "api_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_jobs") as batch:
        batch.add_column(
            sa.Column("owner", sa.String(200), nullable=False, server_default="anonymous")
        )
    op.create_index("api_jobs_owner_status_position", "api_jobs", ["owner", "status", "position"])


def downgrade() -> None:
    op.drop_index("api_jobs_owner_status_position", "api_jobs")
    with op.batch_alter_table("api_jobs") as batch:
        batch.drop_column("owner")
