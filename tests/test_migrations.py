"""The migrations build the schema the models describe, on both backends, and can be walked down and up again."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import Connection, inspect

from stratus_db import Database
from stratus_db.models import Base
from stratus_db.schema import alembic_config, current_revision, head_revision, include_name, schema_drift
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database


def _downgrade_to_base(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def _check_migrations(url: str) -> None:
    db = Database(settings_for(url))
    try:
        assert await db.migrate() == head_revision()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_drift) == [], (
                "models and migrations disagree: write a migration"
            )
            assert await conn.run_sync(current_revision) == head_revision()
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        model_tables = {name for name in tables if include_name(name, "table", None)}
        assert model_tables == set(Base.metadata.tables) | {"alembic_version"}
        if db.backend == "sqlite":
            assert {"memory_entries_fts", "memory_entries_fts_trigram"} <= tables

        async with db.engine.begin() as conn:
            await conn.run_sync(_downgrade_to_base)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(lambda sync: inspect(sync).get_table_names()) == ["alembic_version"]

        await db.migrate()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_drift) == []
    finally:
        await db.close()


async def test_postgres_migrations_match_the_models_and_walk_down_and_up() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _check_migrations(url)


async def test_sqlite_migrations_match_the_models_and_walk_down_and_up(tmp_path: Path) -> None:
    await _check_migrations(sqlite_url(tmp_path / "migrations.db"))
