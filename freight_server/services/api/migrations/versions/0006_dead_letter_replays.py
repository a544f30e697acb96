"""Dead letters an operator asked to retry (`freight dead-letters replay`).

Revision ID: api_0006
Revises: api_0005
"""

from alembic import op

from freight_server.shared.db import add_replay_requests, drop_replay_requests

revision = "api_0006"
down_revision = "api_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_replay_requests(op, "api")


def downgrade() -> None:
    drop_replay_requests(op, "api")
