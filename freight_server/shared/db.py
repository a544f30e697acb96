"""Databases: engines, the tables every projection shares, and migrations by alembic only.

Each service owns its tables, prefixed with its name, so one database can hold all services
(PostgreSQL in deployment) or each can keep its own file (SQLite, the local default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


class ConcurrencyError(RuntimeError):
    """Another process moved the same consumer's offset first; this batch must not commit."""


def create_engine(url: str) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def offsets_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """Where a consumer's stream position is kept, written in the same transaction as its state."""
    return sa.Table(
        f"{prefix}_offsets",
        metadata,
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )


def dead_letters_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """Events a consumer could not decode or apply, kept with the error instead of dropped."""
    return sa.Table(
        f"{prefix}_dead_letters",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        # Set by `freight dead-letters replay`; the running consumer retries the event, then
        # deletes the row or records the new error and clears this
        # (freight_server/shared/dead_letters.py).
        sa.Column("replay_requested_at", sa.DateTime(timezone=True), nullable=True),
    )


def alembic_config(service: str, connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = f"{service}_alembic_version"
    return config


def migrate(engine: sa.Engine, service: str, revision: str = "head") -> None:
    """Bring a service's schema to `revision` (alembic upgrade), the only way tables are made."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Services starting together on one empty database take turns, not collide.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"freight-migrate-{service}"},
            )
        command.upgrade(alembic_config(service, connection), revision)


def run_migrations_online(target_metadata: sa.MetaData) -> None:
    """The body of every service's alembic env.py."""
    from alembic import context

    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through shared.db.migrate (or `freight migrate`)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=config.attributes["version_table"],
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def create_tracking_tables(op: Any, prefix: str) -> None:
    """Migration step shared by every service: its offsets and dead letters tables."""
    op.create_table(
        f"{prefix}_offsets",
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_table(
        f"{prefix}_dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def add_replay_requests(op: Any, prefix: str) -> None:
    """Migration step: dead letters an operator asked to retry (`freight dead-letters replay`)."""
    with op.batch_alter_table(f"{prefix}_dead_letters") as batch:
        batch.add_column(
            sa.Column("replay_requested_at", sa.DateTime(timezone=True), nullable=True)
        )


def drop_replay_requests(op: Any, prefix: str) -> None:
    with op.batch_alter_table(f"{prefix}_dead_letters") as batch:
        batch.drop_column("replay_requested_at")


def drop_tracking_tables(op: Any, prefix: str) -> None:
    op.drop_table(f"{prefix}_dead_letters")
    op.drop_table(f"{prefix}_offsets")


T = TypeVar("T")


def in_slices(values: Sequence[T], size: int = 1000) -> Iterator[Sequence[T]]:
    """Values for an `IN (...)`, a slice at a time: a job's outputs may be tens of thousands,
    well over what a database takes as one statement's parameters."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def kept_until_committed(
    session: Session,
    key: str,
    committed: Callable[[list[Any]], None],
    rolled_back: Callable[[], None],
) -> list[Any]:
    """A list that lives with the session's transaction: what a projection appends to it is
    handed to `committed` once the transaction commits, and dropped if it (or any savepoint of
    it, since which of the items that undid is not known) rolls back, after `rolled_back`. So
    what a service holds in memory learns only what its database holds."""
    kept: dict[str, _Kept] = session.info.setdefault(_KEPT, {})
    entry = kept.get(key)
    if entry is None:
        entry = kept[key] = _Kept([], committed, rolled_back)
    return entry.items


class _Kept(NamedTuple):
    items: list[Any]
    committed: Callable[[list[Any]], None]
    rolled_back: Callable[[], None]


_KEPT = "db.kept_until_committed"  # session.info: each key's _Kept


# Listened to once for every session, rather than by each transaction's own: a session's own
# listeners cost it 35 µs to set up, more than the statement of a small batch.
@sa.event.listens_for(Session, "after_commit")
def _hand_over(session: Session) -> None:
    kept: dict[str, _Kept] | None = session.info.get(_KEPT)
    if not kept or session.in_nested_transaction():
        return  # nothing kept, or a savepoint released: the transaction may still roll back
    for entry in kept.values():
        if entry.items:
            items = list(entry.items)
            entry.items.clear()
            entry.committed(items)


@sa.event.listens_for(Session, "after_rollback")
def _drop(session: Session) -> None:
    for entry in (session.info.get(_KEPT) or {}).values():
        entry.items.clear()
        entry.rolled_back()


def insert_many(
    connection: sa.Connection | Session, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert the rows (each with the first one's keys) with one executemany of the driver's:
    `execute_many` of the table's INSERT."""
    execute_many(connection, _insert(table), rows)


def execute_many(
    connection: sa.Connection | Session,
    statement: sa.Insert | sa.Update,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Execute a statement built once (it is compiled once a statement and set of keys) for
    each row, each with the first one's keys (its columns, and its bound parameters' names),
    with one executemany of the driver's: without SQLAlchemy building every row's parameters,
    which took twice as long as SQLite's own insert of the 20 000 rows of a job's outputs. A
    value whose type converts it (a datetime on SQLite, JSON) is converted as SQLAlchemy
    would, once for a run of rows that hold the same object (a batch's one time)."""
    if not rows:
        return
    if isinstance(connection, Session):
        connection = connection.connection()
    sql, names, converting = _compiled(statement, tuple(rows[0]), connection.dialect)
    converters = {name: _once_a_run(convert) for name, convert in converting.items()}
    if names is None:  # the driver takes named parameters (psycopg)
        named = [
            {**row, **{name: convert(row[name]) for name, convert in converters.items()}}
            for row in rows
        ]
        connection.exec_driver_sql(sql, named)
        return
    if converters:
        order = [(name, converters.get(name)) for name in names]
        positional = [
            tuple(row[name] if convert is None else convert(row[name]) for name, convert in order)
            for row in rows
        ]
    else:
        positional = [tuple(row[name] for name in names) for row in rows]
    connection.exec_driver_sql(sql, positional)


def _once_a_run(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert`, which converts a value once while the values it is given are the same object."""
    last: Any = object()
    converted: Any = None

    def once(value: Any) -> Any:
        nonlocal last, converted
        if value is not last:
            last, converted = value, convert(value)
        return converted

    return once


@cache
def _insert(table: sa.Table) -> sa.Insert:
    return table.insert()


@cache
def _compiled(
    statement: sa.Insert | sa.Update, keys: tuple[str, ...], dialect: sa.Dialect
) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
    """The statement in the driver's own SQL with these keys' columns set, the order its
    positional parameters take (None: named), and the parameters whose values are converted
    first."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    converters = {
        name: convert
        for name, bind in compiled.binds.items()
        if (convert := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
    }
    names = tuple(compiled.positiontup or ()) if compiled.positional else None
    return compiled.string, names, converters
