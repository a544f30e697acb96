"""Dead letters an operator asked to retry (`freight dead-letters replay`).

Revision ID: runner_0003
Revises: runner_0002
"""

from alembic import op

from freight_server.shared.db import add_replay_requests, drop_replay_requests

revision = "runner_0003"
down_revision = "runner_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_replay_requests(op, "runner")


def downgrade() -> None:
    drop_replay_requests(op, "runner")
