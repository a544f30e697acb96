"""An ended attempt's files are read from its JobOutputsSaved in `api_events`
(freight_server/services/api/saved_files.py): `api_job_files`, a copy of them a row a path, goes.

Revision ID: api_0009
Revises: api_0008
"""

import hashlib
import posixpath

import sqlalchemy as sa
from alembic import op

revision = "api_0009"
down_revision = "api_0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("api_job_files_parent", "api_job_files")
    op.drop_table("api_job_files")


def downgrade() -> None:
    """The table as api_0003 made it, filled again from the events, as the projection did."""
    table = op.create_table(
        "api_job_files",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("path_key", sa.String(40), primary_key=True),
        sa.Column("parent_key", sa.String(40), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("modified", sa.String(40), nullable=True),
        sa.Column("digest", sa.String(71), nullable=True),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("skipped", sa.Text, nullable=True),
    )
    op.create_index("api_job_files_parent", "api_job_files", ["job_id", "attempt", "parent_key"])
    events = sa.table(
        "api_events",
        sa.column("job_id", sa.String),
        sa.column("type", sa.String),
        sa.column("position", sa.BigInteger),
        sa.column("body", sa.JSON),
    )
    connection = op.get_bind()
    saved = connection.execute(
        sa.select(events.c.job_id, events.c.body)
        .where(events.c.type == "JobOutputsSaved")
        .order_by(events.c.position)
    )
    for job_id, body in saved:
        data = body["data"]
        attempt = int(data["attempt"])
        rows = {}  # by path: a later listing of the same path replaces an earlier one
        for listed, skipped in [
            *((f, None) for f in data.get("files") or ()),
            *((s, s.get("reason") or "not saved") for s in data.get("skipped") or ()),
        ]:
            path = str(listed["path"])
            rows[path] = {
                "job_id": job_id,
                "attempt": attempt,
                "path_key": _key(path),
                "parent_key": _key(posixpath.dirname(path) or "/"),
                "path": path,
                "name": posixpath.basename(path),
                "type": str(listed.get("type") or "file"),
                "size": int(listed.get("size") or 0),
                "mode": str(listed.get("mode") or "0644"),
                "modified": listed.get("modified"),
                "digest": listed.get("digest"),
                "target": listed.get("target"),
                "skipped": skipped,
            }
        connection.execute(
            table.delete().where(table.c.job_id == job_id, table.c.attempt == attempt)
        )
        if rows:
            connection.execute(table.insert(), list(rows.values()))


def _key(path: str) -> str:
    return hashlib.sha1(path.encode(errors="surrogateescape")).hexdigest()
