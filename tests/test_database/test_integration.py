"""StratusPostgreSQLIntegration itself: units of work, errors, retries, health, metrics, schema readiness."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db import (
    ConversationManager,
    Database,
    DatabaseUnavailableError,
    SchemaNotReadyError,
    UserManager,
    ValidationError,
)
from stratus_db.schema import head_revision
from stratus_db.security.personal import PersonalData
from tests.fixtures.databases import empty_all_tables, settings_for, sqlite_url, throwaway_postgres_database
from tests.fixtures.factories import count_rows, create_user


class Boom(Exception):
    pass


class TestTransaction:
    async def test_calls_sharing_a_transaction_commit_together(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        async with db.transaction() as tx:
            user = await users.create_user("Ana", "ana@aero.com", "instructor", tx=tx)
            await conversations.create_conversation(user.user_id, "Briefing", tx=tx)
        assert await count_rows(db, "users") == 1
        assert await count_rows(db, "conversations") == 1
        assert await count_rows(db, "audit_log") == 2

    async def test_an_error_rolls_back_every_call_of_the_transaction(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        async def create_then_fail() -> None:
            async with db.transaction() as tx:
                user = await users.create_user("Ana", "ana@aero.com", "instructor", tx=tx)
                await conversations.create_conversation(user.user_id, "Briefing", tx=tx)
                raise Boom

        with pytest.raises(Boom):
            await create_then_fail()
        for table in ("users", "conversations", "audit_log"):
            assert await count_rows(db, table) == 0, table

    async def test_a_failed_call_inside_a_transaction_leaves_nothing(
        self, db: Database, users: UserManager
    ) -> None:
        async def create_two() -> None:
            async with db.transaction() as tx:
                await users.create_user("Ana", "ana@aero.com", "instructor", tx=tx)
                await users.create_user("Bia", "not-an-email", "pilot", tx=tx)

        with pytest.raises(ValidationError):
            await create_two()
        assert await count_rows(db, "users") == 0


class TestHealthAndMetrics:
    async def test_health_reports_latency_pool_and_schema(self, db: Database) -> None:
        health = await db.health_check()
        assert health.healthy, health.error
        assert health.backend == db.backend
        assert health.latency_ms > 0
        assert health.schema_revision == health.expected_revision == head_revision()
        assert health.pool.size >= 1

    async def test_metrics_count_operations_and_errors(self, users: UserManager, db: Database) -> None:
        before = db.metrics()["operations"].get("user.create", {"count": 0, "errors": 0})
        await create_user(users, email="one@aero.com")
        with pytest.raises(ValidationError):
            await users.create_user("x", "bad", "pilot")
        after = db.metrics()["operations"]["user.create"]
        assert after["count"] == before["count"] + 2
        assert after["errors"] == before["errors"] + 1
        assert after["errors_by_type"]["ValidationError"] >= 1
        assert after["duration_ms"]["sum"] > 0
        assert after["duration_ms"]["buckets"]["+Inf"] == after["count"]
        assert b"stratus_db_operations_total" in db.metrics_exposition()


class TestUnavailableServer:
    async def test_an_unreachable_postgres_is_one_clear_error_naming_host_and_variable(self) -> None:
        db = Database(settings_for("postgresql+asyncpg://nobody@127.0.0.1:1/stratus"))
        try:
            with pytest.raises(DatabaseUnavailableError, match=r"127\.0\.0\.1:1.*DATABASE_URL"):
                await UserManager(db).get_user_by_email("a@b.com")
            health = await db.health_check()
            assert not health.healthy
            assert health.error is not None
            assert "127.0.0.1:1" in health.error
            assert db.metrics()["operations"]["user.get_by_email"]["retries"] == 2, (
                "connect failures are retried"
            )
        finally:
            await db.close()


class TestSchemaReadiness:
    async def test_postgres_behind_head_is_refused_until_migrated(self) -> None:
        async with throwaway_postgres_database(migrate=False) as url:
            db = Database(settings_for(url))
            try:
                with pytest.raises(SchemaNotReadyError, match="stratus-db migrate"):
                    await create_user(UserManager(db))
                assert not (await db.health_check()).healthy
                assert await db.migrate() == head_revision()
                user = await create_user(UserManager(db))
                assert await UserManager(db).get_user(user.user_id) == user
            finally:
                await db.close()

    async def test_the_embedded_database_is_created_and_migrated_on_first_use(self, tmp_path: Path) -> None:
        path = tmp_path / "new" / "dir" / "stratus.db"
        db = Database(settings_for(sqlite_url(path)))
        try:
            user = await create_user(UserManager(db))
            assert path.exists()
            async with db.transaction(read_only=True) as conn:
                revision = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            assert revision == head_revision()
            assert await UserManager(db).get_user(user.user_id) == user
        finally:
            await db.close()


async def _lock_in_order(db: Database, first: str, second: str, both_hold: asyncio.Barrier) -> int:
    """Lock `first`, wait until the other task holds its first lock too, then lock `second`; return the attempts."""
    attempts = 0

    async def work(conn: AsyncConnection) -> int:
        nonlocal attempts
        attempts += 1
        index = PersonalData.of(db).blind_index.email  # the e-mail itself is encrypted
        await conn.execute(text("UPDATE users SET name = name WHERE email_index = :e"), {"e": index(first)})
        if attempts == 1:
            await both_hold.wait()
        await conn.execute(text("UPDATE users SET name = name WHERE email_index = :e"), {"e": index(second)})
        return attempts

    async with db.operation("test.deadlock") as op:
        return await op.run(work)


async def test_a_deadlock_on_postgres_is_retried_until_both_transactions_commit(
    postgresql_db: Database,
) -> None:
    db = postgresql_db
    users = UserManager(db)
    try:
        await create_user(users, email="a@deadlock.com.br")
        await create_user(users, email="b@deadlock.com.br")
        barrier = asyncio.Barrier(2)
        attempts = await asyncio.gather(
            _lock_in_order(db, "a@deadlock.com.br", "b@deadlock.com.br", barrier),
            _lock_in_order(db, "b@deadlock.com.br", "a@deadlock.com.br", barrier),
        )
        assert sorted(attempts) == [1, 2], "the deadlock victim committed on its second attempt"
        assert db.metrics()["operations"]["test.deadlock"]["retries"] == 1
        assert db.metrics()["operations"]["test.deadlock"]["errors"] == 0
    finally:
        await empty_all_tables(db)


async def test_connections_the_server_closed_are_replaced_without_failing_a_call(
    postgresql_db: Database,
) -> None:
    db = postgresql_db
    users = UserManager(db)
    try:
        # Fill the pool with several live connections, then have the server kill every one of them.
        await asyncio.gather(*(create_user(users) for _ in range(5)))
        errors_before = db.metrics()["operations"]["user.create"]["errors"]
        async with db.engine.connect() as admin:
            await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        created = await create_user(users)
        assert await users.get_user(created.user_id) == created
        assert await count_rows(db, "users") == 6
        # Replaced as they leave the pool (kit/backends.py), or, if the server's goodbye had not arrived yet, on the
        # retry after the first statement met the dead connection: either way no call failed.
        assert db.metrics()["operations"]["user.create"]["errors"] == errors_before
    finally:
        await empty_all_tables(db)
