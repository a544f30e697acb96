"""Every runner's latest heartbeat, for /metrics.

Revision ID: api_0002
Revises: api_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "api_0002"
down_revision = "api_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_runners",
        sa.Column("runner_id", sa.String(200), primary_key=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lost", sa.Boolean, nullable=False),
        sa.Column("heartbeat", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_runners")
