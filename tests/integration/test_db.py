"""The database helpers every projection shares, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.shared.db import create_engine, execute_many, insert_many, kept_until_committed

metadata = sa.MetaData()
things = sa.Table(
    "test_things",
    metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
)


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


def stored(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(things).order_by(things.c.name)))


def test_insert_many_stores_what_sqlalchemy_would(engine):
    seen = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    rows = [
        {"name": f"n{i:05d}", "count": i, "seen_at": seen, "detail": {"files": [i, "x"]}}
        for i in range(2000)
    ]
    with engine.begin() as connection:
        insert_many(connection, things, rows)
        insert_many(connection, things, [])  # nothing to do, and no statement sent
    with Session(engine) as session, session.begin():
        insert_many(session, things, [{"name": "only-some", "count": -1}])  # the others NULL

    back = stored(engine)
    assert len(back) == 2001
    first = back[0]
    assert (first.name, first.count, first.detail) == ("n00000", 0, {"files": [0, "x"]})
    # SQLite hands back naive datetimes: the same moment, as SQLAlchemy's own insert stores it.
    assert first.seen_at.replace(tzinfo=UTC) == seen
    assert back[-1].name == "only-some" and back[-1].seen_at is None and back[-1].detail is None


def test_insert_many_is_part_of_the_transaction(engine):
    with pytest.raises(RuntimeError), engine.begin() as connection:
        insert_many(connection, things, [{"name": "a", "count": 1}])
        raise RuntimeError("the batch failed")
    assert stored(engine) == []


def test_execute_many_updates_each_row_as_sqlalchemy_would(engine):
    with engine.begin() as connection:
        insert_many(connection, things, [{"name": n, "count": 0} for n in ("a", "b", "c")])
    seen = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
    update = things.update().where(things.c.name == sa.bindparam("key"))
    rows = [
        {"key": "a", "count": 1, "seen_at": seen, "detail": {"n": 1}},
        {"key": "c", "count": 3, "seen_at": None, "detail": None},
    ]
    with Session(engine) as session, session.begin():
        execute_many(session, update, rows)
        execute_many(session, update, [])
    a, b, c = stored(engine)
    assert (a.count, a.seen_at.replace(tzinfo=UTC), a.detail) == (1, seen, {"n": 1})
    assert (b.count, b.seen_at, b.detail) == (0, None, None)  # not among the rows: untouched
    assert (c.count, c.seen_at, c.detail) == (3, None, None)


def test_what_is_kept_until_committed_is_learnt_only_at_the_commit(engine):
    learnt: list[list[str]] = []
    forgotten: list[bool] = []

    def kept(session: Session) -> list[str]:
        return kept_until_committed(session, "test", learnt.append, lambda: forgotten.append(True))

    with Session(engine) as session, session.begin():
        kept(session).append("a")
        with session.begin_nested():  # a savepoint released: not yet the commit
            kept(session).append("b")
        assert learnt == []
    assert learnt == [["a", "b"]] and forgotten == []

    with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
        kept(session).append("c")
        raise RuntimeError("the batch failed")
    assert learnt == [["a", "b"]] and forgotten == [True]
