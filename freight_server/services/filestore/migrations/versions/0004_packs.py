"""Small blobs stored together in packs: a blob's pack and its offset there; the batch that
stored them holds them with one row (`filestore_batch_holds`), each naming it.

Revision ID: filestore_0004
Revises: filestore_0003
"""

import sqlalchemy as sa
from alembic import op

revision = "filestore_0004"
down_revision = "filestore_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("filestore_blobs") as batch:
        batch.add_column(sa.Column("pack", sa.String(32), nullable=True))
        batch.add_column(sa.Column("pack_offset", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("held_by", sa.String(32), nullable=True))
    op.create_index("filestore_blobs_pack", "filestore_blobs", ["pack"])
    op.create_table(
        "filestore_batch_holds",
        sa.Column("upload", sa.String(32), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Refused while any blob is in a pack: before packs, a blob was only ever a file of its
    own, and nothing here can write those files (the migration does not know where the blobs
    are)."""
    packed = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM filestore_blobs WHERE pack IS NOT NULL"))
        .scalar_one()
    )
    if packed:
        raise RuntimeError(
            f"{packed} blobs are stored in packs, which the filestore before filestore_0004 "
            "cannot read; downgrading would lose them"
        )
    op.drop_table("filestore_batch_holds")
    op.drop_index("filestore_blobs_pack", "filestore_blobs")
    with op.batch_alter_table("filestore_blobs") as batch:
        batch.drop_column("held_by")
        batch.drop_column("pack_offset")
        batch.drop_column("pack")
