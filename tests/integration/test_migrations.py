"""Alembic migrations are the only source of the schema: for every service that has them, on
SQLite and on PostgreSQL, upgrade from empty, downgrade to nothing, upgrade again, and find no
difference between the models (`services/<service>/schema.py`) and the migrated database."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from freight_server.shared.db import SERVICES_DIR, alembic_config, create_engine, migrate

MIGRATED_SERVICES = sorted(
    path.parent.parent.name
    for path in SERVICES_DIR.glob("*/migrations/versions")
    if any(path.glob("*.py"))
)


def schema_diff(engine: sa.Engine, service: str) -> list[Any]:
    metadata = importlib.import_module(f"freight_server.services.{service}.schema").metadata
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                # Only this service's tables: one database may hold every service's.
                "include_name": lambda name, kind, _parent: (
                    kind != "table" or name in metadata.tables
                ),
            },
        )
        return compare_metadata(context, metadata)


def table_names(engine: sa.Engine, service: str) -> set[str]:
    return {t for t in sa.inspect(engine).get_table_names() if t.startswith(f"{service}_")}


def downgrade(engine: sa.Engine, service: str) -> None:
    with engine.begin() as connection:
        command.downgrade(alembic_config(service, connection), "base")


def test_every_service_with_tables_has_migrations():
    assert {"api", "scheduler", "runner"} <= set(MIGRATED_SERVICES)


@pytest.mark.parametrize("service", MIGRATED_SERVICES)
def test_migrations_round_trip_and_match_the_models(database_url: str, service: str):
    engine = create_engine(database_url)
    try:
        migrate(engine, service)
        tables = table_names(engine, service)
        assert tables, f"{service}: upgrade created no tables"
        assert schema_diff(engine, service) == []

        downgrade(engine, service)
        # Only alembic's own version table may remain.
        assert table_names(engine, service) <= {f"{service}_alembic_version"}

        migrate(engine, service)
        assert table_names(engine, service) == tables
        assert schema_diff(engine, service) == []
    finally:
        engine.dispose()
