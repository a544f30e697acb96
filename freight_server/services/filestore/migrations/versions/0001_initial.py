"""The filestore's blobs, holds, and its projection of which jobs refer to them.

Revision ID: filestore_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from freight_server.shared.db import create_tracking_tables, drop_tracking_tables

revision = "filestore_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "filestore_blobs",
        sa.Column("digest", sa.String(71), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "filestore_holds",
        sa.Column("upload", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_filestore_holds_digest", "filestore_holds", ["digest"])
    op.create_table(
        "filestore_refs",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("digest", sa.String(71), primary_key=True),
    )
    op.create_index("filestore_refs_digest", "filestore_refs", ["digest"])
    op.create_table(
        "filestore_jobs",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("view", sa.JSON, nullable=False),
    )
    create_tracking_tables(op, "filestore")


def downgrade() -> None:
    drop_tracking_tables(op, "filestore")
    for table in ("filestore_jobs", "filestore_refs", "filestore_holds", "filestore_blobs"):
        op.drop_table(table)
