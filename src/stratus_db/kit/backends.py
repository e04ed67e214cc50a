"""What differs between PostgreSQL and SQLite at the engine level, side by side behind one small interface."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import asyncpg
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import ConnectionPoolEntry

from stratus_db.config import Settings
from stratus_db.kit import driver
from stratus_db.kit.sql import register_sqlite_functions

READ_ONLY_OPTION = "stratus_read_only"
"""Execution option marking a connection's transaction as read-only (SQLite then takes no write lock)."""


class Backend(Protocol):
    name: str
    autocommit_single_statements: bool
    """Whether a lone atomic statement may skip BEGIN/COMMIT (PostgreSQL); SQLite keeps its BEGIN IMMEDIATE."""

    def engine_options(self, settings: Settings) -> dict[str, Any]: ...

    def install(self, engine: Engine) -> None:
        """Attach connection-level event handlers to the (sync) engine."""

    def describe(self, url: URL) -> str:
        """Where the database is, for error messages (never the password)."""

    def schema_change(self, conn: AsyncConnection) -> AbstractAsyncContextManager[None]:
        """Wrap a migration's transaction on `conn` (opened inside this block) in what the dialect needs."""


_OPENED_AT = "stratus_opened_at"
"""Key in a pooled connection's `info`: when it was opened (time.monotonic())."""


class PostgresBackend:
    """Connections are screened as they leave the pool: one the server closed while it sat idle, or one opened
    before another connection was found dead (a restart or a mass termination ends them all, and the closed socket
    may not have been noticed yet), is replaced there, before any statement is sent. So once the server is healthy
    again the next calls succeed, where each would otherwise find a dead connection per attempt and run out of
    attempts. SQLAlchemy's pool does the same for the disconnects it detects itself; this also covers the ones the
    driver path (kit/driver.py) detects."""

    name = "postgresql"
    autocommit_single_statements = True

    def __init__(self) -> None:
        self._suspect_before = 0.0
        """Connections opened at or before this time (time.monotonic()) are replaced at checkout."""

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
        driver.install(engine)
        event.listen(engine, "connect", self._stamp)
        event.listen(engine, "checkout", self._screen)
        event.listen(engine, "invalidate", self._suspect_the_others)
        event.listen(engine, "handle_error", self._stuck_protocol_is_a_disconnect)

    @staticmethod
    def _stamp(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info[_OPENED_AT] = time.monotonic()

    def _screen(self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        # DisconnectionError makes the pool replace the connection and check out the new one.
        if dbapi_connection.driver_connection.is_closed():
            self._lost(record)
            raise DisconnectionError("the server closed the pooled connection while it was idle")
        if record.info.get(_OPENED_AT, 0.0) <= self._suspect_before:
            raise DisconnectionError("opened before another pooled connection was found dead")

    def _suspect_the_others(
        self, _dbapi_connection: Any, record: ConnectionPoolEntry, reason: BaseException | None
    ) -> None:
        # A connection dropped for a driver's or the server's error (a lost connection) makes the others suspect;
        # one dropped because its call was cancelled (CancelledError), or by the screen itself, does not.
        if isinstance(reason, Exception) and not isinstance(reason, DisconnectionError):
            self._lost(record)

    def _lost(self, record: ConnectionPoolEntry) -> None:
        # Only a connection newer than the last loss moves the mark: replacing the suspects does not renew it.
        if record.info.get(_OPENED_AT, 0.0) > self._suspect_before:
            self._suspect_before = time.monotonic()

    @staticmethod
    def _stuck_protocol_is_a_disconnect(context: ExceptionContext) -> None:
        # The adapter wraps asyncpg's InternalClientError (kit/driver.py DRIVER_ERRORS) in a DBAPI InternalError,
        # which SQLAlchemy would take for a refusal and hand the broken connection to the next caller.
        if isinstance(context.original_exception.__cause__, asyncpg.exceptions.InternalClientError):
            context.is_disconnect = True

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
            register_sqlite_functions(dbapi_connection)

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # A write transaction takes the write lock up front: two writers that both read first would otherwise
            # deadlock on the upgrade and one would fail with "database is locked".
            read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

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
