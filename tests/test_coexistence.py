"""Migrations and the drift check manage this project's tables only: another application's tables in the same database
(LangGraph's checkpointer and store, here) are never reported, never written into a revision, never touched."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.autogenerate import produce_migrations
from alembic.migration import MigrationContext
from alembic.operations import ops
from sqlalchemy import Connection, inspect

from stratus_db import Database
from stratus_db.models import Base
from stratus_db.schema import COMPARISON_OPTIONS, alembic_config, head_revision, schema_drift
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database

FOREIGN_TABLES = {"checkpoints", "checkpoint_migrations", "store", "store_vectors"}
FOREIGN_INDEXES = {"checkpoints_thread_id_idx", "store_prefix_idx"}

# Shaped like langgraph-checkpoint-postgres and langgraph's PostgresStore, plus a sequence of their own.
POSTGRES_FOREIGN_SCHEMA = [
    "CREATE TABLE checkpoint_migrations (v INTEGER PRIMARY KEY)",
    "CREATE TABLE checkpoints (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', "
    "checkpoint_id TEXT NOT NULL, parent_checkpoint_id TEXT, type TEXT, checkpoint JSONB NOT NULL, "
    "metadata JSONB NOT NULL DEFAULT '{}', PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id))",
    "CREATE INDEX checkpoints_thread_id_idx ON checkpoints (thread_id)",
    "CREATE SEQUENCE store_job_seq",
    "CREATE TABLE store (prefix TEXT NOT NULL, key TEXT NOT NULL, value JSONB NOT NULL, "
    "created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP, job BIGINT DEFAULT nextval('store_job_seq'), "
    "PRIMARY KEY (prefix, key))",
    "CREATE INDEX store_prefix_idx ON store USING btree (prefix text_pattern_ops)",
    "CREATE TABLE store_vectors (id BIGSERIAL PRIMARY KEY, prefix TEXT NOT NULL, key TEXT NOT NULL, "
    "FOREIGN KEY (prefix, key) REFERENCES store (prefix, key) ON DELETE CASCADE)",
    "INSERT INTO checkpoint_migrations (v) VALUES (0), (1)",
    "INSERT INTO checkpoints (thread_id, checkpoint_id, checkpoint) VALUES ('t1', 'c1', '{}'), ('t1', 'c2', '{}')",
    "INSERT INTO store (prefix, key, value) VALUES ('users.ana', 'base', '{\"icao\": \"SBGR\"}')",
    "INSERT INTO store_vectors (prefix, key) VALUES ('users.ana', 'base')",
]

# langgraph-checkpoint-sqlite's shape; store_vectors holds a row whose reference is broken (written by an
# application that does not enforce foreign keys), which is that application's business, not our migration's.
SQLITE_FOREIGN_SCHEMA = [
    "CREATE TABLE checkpoint_migrations (v INTEGER PRIMARY KEY)",
    "CREATE TABLE checkpoints (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '', "
    "checkpoint_id TEXT NOT NULL, parent_checkpoint_id TEXT, type TEXT, checkpoint BLOB, metadata BLOB, "
    "PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id))",
    "CREATE INDEX checkpoints_thread_id_idx ON checkpoints (thread_id)",
    "CREATE TABLE store (prefix TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
    "created_at TEXT DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (prefix, key))",
    "CREATE INDEX store_prefix_idx ON store (prefix)",
    "CREATE TABLE store_vectors (id INTEGER PRIMARY KEY AUTOINCREMENT, prefix TEXT NOT NULL, key TEXT NOT NULL, "
    "FOREIGN KEY (prefix, key) REFERENCES store (prefix, key) ON DELETE CASCADE)",
    "INSERT INTO checkpoint_migrations (v) VALUES (0), (1)",
    "INSERT INTO checkpoints (thread_id, checkpoint_id, checkpoint) VALUES ('t1', 'c1', x'00'), ('t1', 'c2', x'01')",
    "INSERT INTO store (prefix, key, value) VALUES ('users.ana', 'base', '{\"icao\": \"SBGR\"}')",
    "INSERT INTO store_vectors (prefix, key) VALUES ('users.ana', 'base'), ('users.gone', 'base')",
]

EXPECTED_ROWS = {"checkpoint_migrations": 2, "checkpoints": 2, "store": 1}


async def _create_foreign_objects(db: Database) -> None:
    """As the other application would: through its own connection, with its own rules."""
    if db.backend == "postgresql":
        async with db.engine.connect() as conn, db._backend.schema_change(conn), conn.begin():
            for statement in POSTGRES_FOREIGN_SCHEMA:
                await conn.exec_driver_sql(statement)
    else:
        path = db.settings.database_url.database
        assert path is not None
        with sqlite3.connect(path) as connection:  # foreign keys unenforced: SQLite's default
            for statement in SQLITE_FOREIGN_SCHEMA:
                connection.execute(statement)
        connection.close()


async def _assert_foreign_objects_intact(db: Database) -> None:
    async with db.engine.connect() as conn:
        for table, count in EXPECTED_ROWS.items():
            assert (await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar_one() == count, table
        vectors = (await conn.exec_driver_sql("SELECT count(*) FROM store_vectors")).scalar_one()
        assert vectors == (1 if db.backend == "postgresql" else 2)

        def indexes(sync: Connection) -> set[str]:
            inspector = inspect(sync)
            return {
                str(index["name"])
                for table in ("checkpoints", "store")
                for index in inspector.get_indexes(table)
            }

        assert await conn.run_sync(indexes) >= FOREIGN_INDEXES
        if db.backend == "postgresql":
            sequences = set(await conn.run_sync(lambda sync: inspect(sync).get_sequence_names()))
            assert {"store_job_seq", "store_vectors_id_seq"} <= sequences


def _tables(sync: Connection) -> set[str]:
    return set(inspect(sync).get_table_names())


def _planned_operations(sync: Connection) -> list[ops.MigrateOperation]:
    """What `alembic revision --autogenerate` would write, compared as migrations/env.py compares."""
    context = MigrationContext.configure(sync, opts={**COMPARISON_OPTIONS, "target_metadata": Base.metadata})
    upgrade = produce_migrations(context, Base.metadata).upgrade_ops
    assert upgrade is not None
    return list(upgrade.ops)


def _walk(target: str, *, down: bool = False) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, target)

    return run


async def _foreign_tables_are_not_drift(url: str) -> None:
    db = Database(settings_for(url))
    try:
        await db.migrate()
        await _create_foreign_objects(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_drift) == []
            assert await conn.run_sync(_planned_operations) == []
        assert (await db.health_check()).healthy
    finally:
        await db.close()


async def _migrations_leave_foreign_tables_alone(url: str) -> None:
    db = Database(settings_for(url))
    try:
        await _create_foreign_objects(db)
        assert await db.migrate() == head_revision()
        await _assert_foreign_objects_intact(db)

        async with db.engine.connect() as conn, db._backend.schema_change(conn), conn.begin():
            await conn.run_sync(_walk("base", down=True))
        async with db.engine.connect() as conn:
            remaining = await conn.run_sync(_tables)
        assert remaining == FOREIGN_TABLES | {"alembic_version"}
        await _assert_foreign_objects_intact(db)

        assert await db.migrate() == head_revision()
        await _assert_foreign_objects_intact(db)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_drift) == []
    finally:
        await db.close()


async def test_postgres_foreign_tables_are_neither_drift_nor_in_an_autogenerated_revision() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _foreign_tables_are_not_drift(url)


async def test_sqlite_foreign_tables_are_neither_drift_nor_in_an_autogenerated_revision(
    tmp_path: Path,
) -> None:
    await _foreign_tables_are_not_drift(sqlite_url(tmp_path / "shared.db"))


async def test_postgres_upgrade_and_downgrade_leave_foreign_tables_and_rows_intact() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _migrations_leave_foreign_tables_alone(url)


async def test_sqlite_upgrade_and_downgrade_leave_foreign_tables_and_rows_intact(tmp_path: Path) -> None:
    await _migrations_leave_foreign_tables_alone(sqlite_url(tmp_path / "shared.db"))
