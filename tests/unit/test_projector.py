"""API processes writing the same database share one projector lock; others have their own."""

from freight_server.services.api.projector import projector_role
from freight_server.shared.metrics import projection_lag


def test_processes_on_one_postgresql_database_share_the_lock():
    one = projector_role("postgresql://freight:a@db:5432/freight", host="api-1")
    assert one == projector_role("postgresql+psycopg://other:b@db:5432/freight", host="api-2")
    assert one != projector_role("postgresql://freight:a@db:5432/staging", host="api-1")


def test_a_sqlite_file_is_shared_only_on_its_host():
    path = "sqlite:////var/lib/freight/api.db"
    assert projector_role(path, host="a") == projector_role(path, host="a")
    assert projector_role(path, host="a") != projector_role(path, host="b")


def test_lag_counts_the_events_not_yet_applied():
    assert projection_lag(tail=None, position=None) == 0  # an empty stream
    assert projection_lag(tail=9, position=None) == 10
    assert projection_lag(tail=9, position=9) == 0
