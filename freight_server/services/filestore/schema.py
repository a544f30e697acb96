"""The filestore's own tables: the blobs it stores, the holds that keep fresh uploads alive until
a job refers to them, and (a projection of the log) which jobs refer to which blobs and when
each job ended, for retention."""

import sqlalchemy as sa

from freight_server.shared.db import dead_letters_table, offsets_table

metadata = sa.MetaData()

blobs = sa.Table(
    "filestore_blobs",
    metadata,
    sa.Column("digest", sa.String(71), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    # A blob stored in a pack (small blobs that came together): which one, and where in it.
    sa.Column("pack", sa.String(32), nullable=True),
    sa.Column("pack_offset", sa.BigInteger, nullable=True),
    sa.Index("filestore_blobs_pack", "pack"),  # a pack goes once none of its blobs is left
    # The batch (filestore_batch_holds) that stored the blob and holds it, if a batch did.
    sa.Column("held_by", sa.String(32), nullable=True),
)

# An upload holds its blob until `expires_at` (FREIGHT_UPLOAD_GRACE): by then the job that uses
# it is in the log and refers to it, or the upload was abandoned and the blob may go.
holds = sa.Table(
    "filestore_holds",
    metadata,
    sa.Column("upload", sa.String(32), primary_key=True),
    sa.Column("digest", sa.String(71), nullable=False, index=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

# A batch of small blobs (put_many) holds the blobs it stored, each naming it (`held_by`), with
# one row rather than one a blob; a blob of the batch already stored is held as an upload is.
batch_holds = sa.Table(
    "filestore_batch_holds",
    metadata,
    sa.Column("upload", sa.String(32), primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

refs = sa.Table(
    "filestore_refs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("digest", sa.String(71), primary_key=True),
    sa.Index("filestore_refs_digest", "digest"),
)

jobs = sa.Table(
    "filestore_jobs",
    metadata,
    sa.Column("job_id", sa.String(36), primary_key=True),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("view", sa.JSON, nullable=False),
    sa.Column("logs_deleted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("filestore_jobs_ended_at", "ended_at"),  # the name migration filestore_0002 gives it
)

offsets = offsets_table(metadata, "filestore")
dead_letters = dead_letters_table(metadata, "filestore")
