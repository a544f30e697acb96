"""What each owner has used (freight_server/services/api/usage.py), filled from the views
already projected.

Revision ID: api_0008
Revises: api_0007
"""

import sqlalchemy as sa
from alembic import op

from freight_server.services.api.usage import backfill

revision = "api_0008"
down_revision = "api_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_usage",
        sa.Column("owner", sa.String(200), primary_key=True),
        sa.Column("jobs", sa.BigInteger, nullable=False),
        sa.Column("run_ms", sa.BigInteger, nullable=False),
        sa.Column("gpu_ms", sa.BigInteger, nullable=False),
        sa.Column("cpu_ms", sa.BigInteger, nullable=False),
    )
    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table("api_usage")
