"""kit/driver.py: prepared statements on the asyncpg connection still give typed errors and leave the pool sound."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from stratus_db import Database, DatabaseError, DatabaseUnavailableError
from stratus_db.kit import driver
from tests.fixtures.databases import settings_for


@pytest.fixture
async def impatient_db(postgres_url: str) -> AsyncIterator[Database]:
    db = Database(settings_for(postgres_url).model_copy(update={"STRATUS_STATEMENT_TIMEOUT_MS": 50}))
    yield db
    await db.close()


async def test_rows_come_back_as_dicts_with_json_decoded(postgresql_db: Database) -> None:
    async with postgresql_db.transaction() as conn:
        rows = await driver.fetch(conn, "SELECT $1::int AS n, '{\"a\": [1, 2]}'::jsonb AS doc", 7)
    assert rows == [{"n": 7, "doc": {"a": [1, 2]}}]


async def test_a_server_refusal_is_a_database_error(impatient_db: Database) -> None:
    with pytest.raises(DatabaseError, match="QueryCanceledError, SQLSTATE 57014"):
        async with impatient_db.transaction() as conn:
            await driver.fetch(conn, "SELECT pg_sleep(1)")


async def test_a_lost_connection_is_reported_and_never_reused(postgresql_db: Database) -> None:
    async def query_after_the_server_killed_the_connection() -> None:
        async with postgresql_db.transaction() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with postgresql_db.engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await driver.fetch(conn, "SELECT 1")

    with pytest.raises(DatabaseUnavailableError, match="connection to PostgreSQL"):
        await query_after_the_server_killed_the_connection()
    async with postgresql_db.transaction() as conn:
        assert await driver.fetch(conn, "SELECT 1 AS one") == [{"one": 1}]
