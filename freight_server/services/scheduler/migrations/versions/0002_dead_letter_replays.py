"""Dead letters an operator asked to retry (`freight dead-letters replay`).

Revision ID: scheduler_0002
Revises: scheduler_0001
"""

from alembic import op

from freight_server.shared.db import add_replay_requests, drop_replay_requests

revision = "scheduler_0002"
down_revision = "scheduler_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_replay_requests(op, "scheduler")


def downgrade() -> None:
    drop_replay_requests(op, "scheduler")
