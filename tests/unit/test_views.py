"""Folding a batch into stored views: each view read once, written once, the same as event by
event; rows of another projector untouched."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from freight_server.shared.consumer import Logged
from freight_server.shared.events import EventType
from freight_server.shared.jobs import JobView, Status, fold
from freight_server.shared.views import fold_views, write_views
from tests.unit.test_fold import assigned, ev, finished, started, submitted

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


def apply(session: Session, events, projector: str = "a") -> list:
    batch = [Logged(e, n) for n, e in enumerate(events)]
    changes = fold_views(session, views, batch, {"projector": projector})
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
