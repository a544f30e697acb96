"""Dead letters an operator asked to retry (`freight dead-letters replay`).

Revision ID: filestore_0003
Revises: filestore_0002
"""

from alembic import op

from freight_server.shared.db import add_replay_requests, drop_replay_requests

revision = "filestore_0003"
down_revision = "filestore_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_replay_requests(op, "filestore")


def downgrade() -> None:
    drop_replay_requests(op, "filestore")
