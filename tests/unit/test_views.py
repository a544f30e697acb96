"""Folding a batch into stored views: each view read once, written once, the same as event by
event; rows of another projector untouched. With a cache of what was committed: the same views,
read from the database only when the cache cannot vouch for them."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.shared.consumer import CONSUMING, Logged
from freight_server.shared.events import EventType
from freight_server.shared.jobs import JobView, Status, fold
from freight_server.shared.views import ViewCache, fold_views, write_views
from tests.unit.test_fold import JOB, assigned, cancel, ev, finished, started, submitted

metadata = sa.MetaData()
views = sa.Table(
    "views",
    metadata,
    sa.Column("projector", sa.String, primary_key=True),
    sa.Column("job_id", sa.String, primary_key=True),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("view", sa.JSON, nullable=False),
)


@pytest.fixture
def session() -> Iterator[Session]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    with Session(engine) as session:
        yield session


def columns(view: JobView) -> dict:
    return {"status": view.status.value, "view": view.to_dict()}


def apply(session: Session, events, projector: str = "a", cache: ViewCache | None = None) -> list:
    batch = [Logged(e, n) for n, e in enumerate(events)]
    changes = fold_views(session, views, batch, {"projector": projector}, cache)
    write_views(session, views, changes, columns, {"projector": projector})
    return changes


def stored(session: Session, projector: str = "a") -> dict[str, JobView]:
    rows = session.execute(sa.select(views).where(views.c.projector == projector))
    return {row.job_id: JobView.from_dict(row.view) for row in rows}


def test_a_batch_folds_to_what_the_events_one_by_one_would():
    events = [submitted(), assigned(), started(), finished()]
    with_batches = {}
    for split in (1, 2, 4):
        engine = sa.create_engine("sqlite://")
        metadata.create_all(engine)
        with Session(engine) as session:
            for i in range(0, len(events), split):
                apply(session, events[i : i + split])
            with_batches[split] = stored(session)
    assert with_batches[1] == with_batches[2] == with_batches[4]
    (view,) = with_batches[1].values()
    assert view == fold(events) and view.status == Status.COMPLETE


def test_a_change_tells_the_view_before_the_batch_and_where_it_began(session):
    (created,) = apply(session, [submitted()])
    assert created.before is None and created.position == 0
    (moved,) = apply(session, [assigned(), started()])
    assert moved.before == created.after and moved.after.status == Status.RUNNING


def test_an_event_that_changes_nothing_writes_nothing(session):
    first = submitted()
    apply(session, [first])
    assert apply(session, [first]) == []  # a duplicate: the fold ignores it
    late = ev(EventType.JOB_ASSIGNED, job_id="unknown-job", runner="r1", attempt=1, gpus=[])
    assert apply(session, [late]) == []  # no such job: nothing to assign


def test_rows_of_another_projector_are_neither_read_nor_written(session):
    apply(session, [submitted()], projector="a")
    apply(session, [submitted(), assigned()], projector="b")
    assert [v.status for v in stored(session, "a").values()] == [Status.QUEUED]
    assert [v.status for v in stored(session, "b").values()] == [Status.PENDING]


# -- with a cache ----------------------------------------------------------------------------


@pytest.fixture
def engine() -> sa.Engine:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    metadata.create_all(engine)
    return engine


@contextmanager
def transaction(engine: sa.Engine, stretch: object | None) -> Iterator[Session]:
    """A transaction of a consumer in that stretch of consuming (None: of no consumer)."""
    with Session(engine) as session, session.begin():
        if stretch is not None:
            session.info[CONSUMING] = stretch
        yield session


@contextmanager
def reads_of_views(engine: sa.Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "views" in statement:
            statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)


def test_the_cache_folds_what_the_database_would_without_reading_it_again(engine):
    cache, stretch = ViewCache(), object()
    events = [submitted(), assigned(), started()]
    with reads_of_views(engine) as reads:
        for event in events:
            with transaction(engine, stretch) as session:
                apply(session, [event], cache=cache)
    assert len(reads) == 1  # only the first batch, before the job was known
    with Session(engine) as session:
        assert stored(session)[JOB] == fold(events)


def test_two_folds_in_one_transaction_see_each_other(engine):
    cache, stretch = ViewCache(), object()
    with transaction(engine, stretch) as session:
        apply(session, [submitted()], cache=cache)
    with transaction(engine, stretch) as session:
        apply(session, [assigned()], cache=cache)
        (change,) = apply(session, [started()], cache=cache)
    assert change.before is not None and change.before.status == Status.PENDING
    assert change.after.status == Status.RUNNING


def test_a_rollback_leaves_nothing_of_it_in_the_cache(engine):
    cache, stretch = ViewCache(), object()
    first = submitted()
    with transaction(engine, stretch) as session:
        apply(session, [first], cache=cache)
    with pytest.raises(RuntimeError), transaction(engine, stretch) as session:
        apply(session, [assigned()], cache=cache)
        raise RuntimeError("the batch failed")
    with transaction(engine, stretch) as session:
        (change,) = apply(session, [cancel()], cache=cache)
    assert change.before == fold([first])  # not the assignment rolled back


def test_a_savepoint_rolled_back_leaves_nothing_of_it_either(engine):
    """A batch applied event by event, each under a savepoint: one set aside, the rest kept."""
    cache, stretch = ViewCache(), object()
    first, second = submitted(), assigned()
    with transaction(engine, stretch) as session:
        apply(session, [first], cache=cache)
    with transaction(engine, stretch) as session:
        with session.begin_nested():
            apply(session, [second], cache=cache)
        with pytest.raises(RuntimeError), session.begin_nested():
            apply(session, [started()], cache=cache)
            raise RuntimeError("this event was bad")
    with transaction(engine, stretch) as session:
        (change,) = apply(session, [cancel()], cache=cache)
    assert change.before == fold([first, second])  # the kept event's, not the one set aside's


def test_what_another_writer_changed_is_read_in_a_new_stretch(engine):
    """Another process applied the log meanwhile (a standby that led): the consumer starts
    again from the stored position, and nothing the cache held is taken as stored."""
    cache = ViewCache()
    first, second = submitted(), assigned()
    with transaction(engine, object()) as session:
        apply(session, [first], cache=cache)
    with transaction(engine, object()) as session:
        apply(session, [second])  # the other writer, with no cache of ours
    with transaction(engine, object()) as session:
        (change,) = apply(session, [started()], cache=cache)
    assert change.before == fold([first, second])


def test_a_transaction_of_no_consumer_empties_the_cache(engine):
    """A dead letter replayed folds outside any stretch: what it writes is read back after."""
    cache, stretch = ViewCache(), object()
    first, second = submitted(), assigned()
    with transaction(engine, stretch) as session:
        apply(session, [first], cache=cache)
    with transaction(engine, None) as session:
        apply(session, [second], cache=cache)
    with transaction(engine, stretch) as session:
        (change,) = apply(session, [started()], cache=cache)
    assert change.before == fold([first, second])


def test_an_ended_job_is_not_kept_since_retention_deletes_it(engine):
    cache, stretch = ViewCache(), object()
    with transaction(engine, stretch) as session:
        apply(session, [submitted(), assigned(), started(), finished()], cache=cache)
    with transaction(engine, stretch) as session:
        session.execute(views.delete())  # retention, behind the projection's back
    with transaction(engine, stretch) as session:
        assert apply(session, [cancel()], cache=cache) == []  # no such job any more


def test_past_its_limit_the_cache_keeps_the_newest(engine):
    cache, stretch = ViewCache(limit=2), object()
    jobs = [f"job-{n}" for n in range(3)]
    with transaction(engine, stretch) as session:
        apply(
            session,
            [ev(EventType.JOB_SUBMITTED, job_id=j, command="true", image="busybox") for j in jobs],
            cache=cache,
        )
    with transaction(engine, stretch) as session:
        assert set(cache.stored(session, jobs)) == set(jobs[1:])
