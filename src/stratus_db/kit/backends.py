"""What differs between PostgreSQL and SQLite at the engine level, side by side behind one small interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.config import Settings

ROLLED_BACK_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""Serialization failure, deadlock, lock not available: PostgreSQL rolled the work back, so a retry is safe."""

READ_ONLY_OPTION = "stratus_read_only"
"""Execution option marking a connection's transaction as read-only (SQLite then takes no write lock)."""


class Backend(Protocol):
    name: str
    autocommit_single_statements: bool
    """Whether a lone atomic statement may skip BEGIN/COMMIT (PostgreSQL); SQLite keeps its BEGIN IMMEDIATE."""

    def engine_options(self, settings: Settings) -> dict[str, Any]: ...

    def install(self, engine: Engine) -> None:
        """Attach connection-level event handlers to the (sync) engine."""

    def is_rolled_back_conflict(self, exc: DBAPIError) -> bool:
        """True when the server aborted the transaction for a reason a retry can cure (serialization, deadlock,
        lock contention): nothing of it was committed."""

    def describe(self, url: URL) -> str:
        """Where the database is, for error messages (never the password)."""

    def schema_change(self, conn: AsyncConnection) -> AbstractAsyncContextManager[None]:
        """Wrap a migration's transaction on `conn` (opened inside this block) in what the dialect needs."""


class PostgresBackend:
    name = "postgresql"
    autocommit_single_statements = True

    def engine_options(self, settings: Settings) -> dict[str, Any]:
        # Every statement here is parameterized and index-driven (one user's rows): the generic plan is the right
        # plan, and re-planning each execution (the default for the first runs and whenever PostgreSQL guesses a
        # custom plan is cheaper) cost a full-text search 3 ms of its 6 ms.
        server_settings = {"application_name": "stratus_db", "plan_cache_mode": "force_generic_plan"}
        if settings.STRATUS_STATEMENT_TIMEOUT_MS:
            server_settings["statement_timeout"] = str(settings.STRATUS_STATEMENT_TIMEOUT_MS)
        return {
            "pool_size": settings.STRATUS_POOL_SIZE,
            "max_overflow": settings.STRATUS_POOL_MAX_OVERFLOW,
            "pool_timeout": settings.STRATUS_POOL_TIMEOUT_S,
            "pool_recycle": settings.STRATUS_POOL_RECYCLE_S,
            "connect_args": {
                "server_settings": server_settings,
                "timeout": settings.STRATUS_CONNECT_TIMEOUT_S,
            },
        }

    def install(self, engine: Engine) -> None:
        return None

    def is_rolled_back_conflict(self, exc: DBAPIError) -> bool:
        return getattr(exc.orig, "sqlstate", None) in ROLLED_BACK_SQLSTATES

    @asynccontextmanager
    async def schema_change(self, conn: AsyncConnection) -> AsyncIterator[None]:
        yield  # PostgreSQL alters tables in place, inside the migration's transaction

    def describe(self, url: URL) -> str:
        host = url.host or url.query.get("host") or "localhost"
        return f"PostgreSQL at {host}:{url.port or 5432}/{url.database}"


class SQLiteBackend:
    name = "sqlite"
    autocommit_single_statements = False

    def engine_options(self, settings: Settings) -> dict[str, Any]:
        busy_timeout_s = max(settings.STRATUS_STATEMENT_TIMEOUT_MS, 1000) / 1000
        return {
            "pool_size": settings.STRATUS_POOL_SIZE,
            "max_overflow": settings.STRATUS_POOL_MAX_OVERFLOW,
            "pool_timeout": settings.STRATUS_POOL_TIMEOUT_S,
            "connect_args": {"timeout": busy_timeout_s},
        }

    def install(self, engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the driver so that BEGIN is ours (see _begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in ("foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL"):
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # A write transaction takes the write lock up front: two writers that both read first would otherwise
            # deadlock on the upgrade and one would fail with "database is locked".
            read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    def is_rolled_back_conflict(self, exc: DBAPIError) -> bool:
        text = str(exc.orig).lower()
        return "database is locked" in text or "database is busy" in text

    @asynccontextmanager
    async def schema_change(self, conn: AsyncConnection) -> AsyncIterator[None]:
        """Foreign keys off for the migration, then checked.

        SQLite alters most tables by copying them into a new one and dropping the old (Alembic's batch mode); with
        foreign keys enforced, dropping `conversations` would cascade to every message. The pragma only takes effect
        outside a transaction, hence on the driver connection before BEGIN; `PRAGMA foreign_key_check` then proves
        before COMMIT that the migration left every reference intact (as SQLite's own documentation prescribes).
        """
        driver_connection = (await conn.get_raw_connection()).driver_connection
        assert driver_connection is not None, "a checked-out connection always has its driver connection"
        await driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            yield
        finally:
            await driver_connection.execute("PRAGMA foreign_keys=ON")

    def describe(self, url: URL) -> str:
        return f"SQLite file {url.database}"


def backend_for(url: URL) -> Backend:
    return PostgresBackend() if url.get_backend_name() == "postgresql" else SQLiteBackend()
