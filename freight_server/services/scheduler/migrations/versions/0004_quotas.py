"""Each owner's quota, from OwnerQuotaSet.

Revision ID: scheduler_0004
Revises: scheduler_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "scheduler_0004"
down_revision = "scheduler_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_quotas",
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("max_gpus", sa.Integer, nullable=True),
        sa.Column("max_running", sa.Integer, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("scheduler_quotas")
