"""kit/driver.py: prepared statements on the asyncpg connection still give typed errors and leave the pool sound,
also on a connection taken straight from the pool (`Operation.fetch`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from stratus_db import Database, DatabaseError, DatabaseUnavailableError, MemoryManager
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


@pytest.fixture
async def one_connection_db(postgres_url: str) -> AsyncIterator[Database]:
    settings = settings_for(postgres_url).model_copy(
        update={"STRATUS_POOL_SIZE": 1, "STRATUS_POOL_MAX_OVERFLOW": 0, "STRATUS_POOL_TIMEOUT_S": 0.2}
    )
    db = Database(settings)
    yield db
    await db.close()


async def test_pooled_rows_come_back_as_dicts_with_json_decoded(postgresql_db: Database) -> None:
    # That the statement commits on its own: test_cache.py's disabled-cache test reads back the counts it wrote.
    async with postgresql_db.operation("test.pooled", read_only=True) as op:
        rows = await op.fetch("SELECT $1::int AS n, '{\"a\": [1, 2]}'::jsonb AS doc", 7)
    assert rows == [{"n": 7, "doc": {"a": [1, 2]}}]


async def test_a_pooled_connection_the_server_closed_is_replaced(one_connection_db: Database) -> None:
    async with one_connection_db.operation("test.first", read_only=True) as op:
        (first,) = await op.fetch("SELECT pg_backend_pid() AS pid")
    admin = await asyncpg.connect(
        one_connection_db.settings.database_url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
    )
    try:
        assert await admin.fetchval(
            "SELECT pg_terminate_backend($1, 60000)", first["pid"]
        )  # waits for its exit
    finally:
        await admin.close()
    async with one_connection_db.operation("test.after", read_only=True) as op:
        (after,) = await op.fetch("SELECT pg_backend_pid() AS pid")
    assert after["pid"] != first["pid"]
    # Replaced as it left the pool (kit/backends.py), before anything was sent: not even a retry.
    assert one_connection_db.metrics()["operations"]["test.after"]["retries"] == 0


async def test_an_exhausted_pool_is_one_clear_error_for_a_pooled_read(one_connection_db: Database) -> None:
    memories = MemoryManager(one_connection_db)
    assert (
        await memories.get_memory(uuid.uuid4(), "k") is None
    )  # the schema is checked: the next read needs the pool
    async with one_connection_db.transaction():  # holds the only connection
        with pytest.raises(DatabaseUnavailableError, match="no free connection in the pool"):
            await memories.get_memory(uuid.uuid4(), "k")
    assert await memories.get_memory(uuid.uuid4(), "k") is None


async def _backend_pid(db: Database) -> int:
    async with db.operation("test.pid", read_only=True) as op:
        (row,) = await op.fetch("SELECT pg_backend_pid() AS pid")
    pid: int = row["pid"]
    return pid


async def test_a_statement_the_driver_refuses_is_a_database_error_and_keeps_the_connection(
    one_connection_db: Database,
) -> None:
    before = await _backend_pid(one_connection_db)
    with pytest.raises(DatabaseError, match="the driver refused the statement") as refused:
        async with one_connection_db.operation("test.refused", read_only=True) as op:
            await op.fetch("SELECT $1::int AS n", 1, 2)  # one argument too many
    assert not isinstance(refused.value, DatabaseUnavailableError)
    assert await _backend_pid(one_connection_db) == before, "a sound connection is not thrown away"


async def _terminate_while_running(db: Database, marker: str) -> int:
    """Wait until a statement containing `marker` runs, terminate its backend, return the backend's pid."""
    admin = await asyncpg.connect(
        db.settings.database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        for _ in range(500):
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}%",
            )
            if pid is not None:
                assert await admin.fetchval("SELECT pg_terminate_backend($1, 60000)", pid)
                return int(pid)
            await asyncio.sleep(0.01)
        raise AssertionError(f"no running statement contains {marker}")
    finally:
        await admin.close()


async def test_a_connection_killed_under_a_read_is_replaced_and_the_read_repeated(
    one_connection_db: Database,
) -> None:
    async def read() -> list[dict[str, object]]:
        async with one_connection_db.operation("test.killed_read", read_only=True) as op:
            return await op.fetch(
                "SELECT pg_backend_pid() AS pid, pg_sleep(0.5) AS slept, 'killed-read' AS marker"
            )

    reading = asyncio.create_task(read())
    killed = await _terminate_while_running(one_connection_db, "killed-read' AS marker")
    (row,) = await reading
    assert row["pid"] != killed
    assert one_connection_db.metrics()["operations"]["test.killed_read"]["retries"] == 1


async def test_a_connection_killed_under_a_write_is_reported_lost_not_refused(
    one_connection_db: Database,
) -> None:
    async def write() -> None:
        async with one_connection_db.operation("test.killed_write") as op:
            await op.fetch("SELECT pg_sleep(0.5) AS slept, 'killed-write' AS marker")

    writing = asyncio.create_task(write())
    killed = await _terminate_while_running(one_connection_db, "killed-write' AS marker")
    with pytest.raises(DatabaseUnavailableError, match="lost the connection to PostgreSQL") as lost:
        await writing
    assert lost.value.retryable is False, "whether a write committed is unknown: it is not repeated"
    assert await _backend_pid(one_connection_db) != killed


async def test_the_servers_goodbye_counts_as_a_lost_connection_and_a_refusal_does_not(
    postgres_url: str,
) -> None:
    """What `_connection_lost` decides from the error alone, on an open connection: the server's FATAL shutdown errors
    and connection exceptions (class 08) mean the session is over even before asyncpg marks the connection closed."""
    connection = await asyncpg.connect(
        settings_for(postgres_url)
        .database_url.set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    try:
        for lost in (
            asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
            asyncpg.exceptions.CrashShutdownError("crash"),
            asyncpg.exceptions.ConnectionFailureError("connection failure"),
            ConnectionResetError("reset by peer"),
        ):
            assert driver._connection_lost(lost, connection), lost
        for refused in (
            asyncpg.exceptions.UniqueViolationError("duplicate key"),
            asyncpg.exceptions.DataError("invalid input for query argument $1"),
            asyncpg.InterfaceError("the server expects 1 argument for this query, 2 were passed"),
        ):
            assert not driver._connection_lost(refused, connection), refused
    finally:
        await connection.close()


async def test_a_driver_statement_first_in_a_transaction_belongs_to_it(postgresql_db: Database) -> None:
    """SQLAlchemy sends BEGIN with its own first statement only; kit/driver.py sends it before a driver statement
    that comes first, so the statement does not commit on its own."""
    async with postgresql_db.transaction() as conn:
        (first,) = await driver.fetch(conn, "SELECT txid_current() AS xid, now() AS at")
        (second,) = await driver.fetch(conn, "SELECT txid_current() AS xid, now() AS at")
    assert (first["xid"], first["at"]) == (second["xid"], second["at"]), "one transaction, not two"


_INSERT_USER = (
    "INSERT INTO users (user_id, name, email, email_index, role, licenses, preferences, created_at, updated_at, "
    "last_active) VALUES ($1, 'Ana', $2, md5($2), 'pilot', '[]', '{}', now(), now(), now())"
)


async def test_a_driver_transaction_is_one_transaction_that_commits_or_rolls_back_whole(
    postgresql_db: Database,
) -> None:
    kept, dropped = uuid.uuid4(), uuid.uuid4()
    async with postgresql_db.driver_transaction() as transaction:
        (first,) = await transaction.fetch("SELECT txid_current() AS xid")
        await transaction.fetch(_INSERT_USER, kept, f"{kept.hex}@aeroclube.com.br")
        (second,) = await transaction.fetch("SELECT txid_current() AS xid")
    assert first == second, "one transaction, not one per statement"

    async def insert_then_fail() -> None:
        async with postgresql_db.driver_transaction() as transaction:
            await transaction.fetch(_INSERT_USER, dropped, f"{dropped.hex}@aeroclube.com.br")
            await transaction.fetch("SELECT 1 / 0")

    with pytest.raises(DatabaseError, match="SQLSTATE 22012"):
        await insert_then_fail()
    try:
        async with postgresql_db.transaction(read_only=True) as conn:
            stored = (await conn.execute(text("SELECT user_id FROM users"))).scalars().all()
        assert stored == [kept], "the committed row stays, the rolled-back one is gone"
        assert await _backend_pid(postgresql_db) > 0, "the pool is sound after the rollback"
    finally:
        async with postgresql_db.transaction() as conn:
            await conn.execute(text("DELETE FROM users"))
