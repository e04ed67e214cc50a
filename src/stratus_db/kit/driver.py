"""Prepared statements straight on the asyncpg connection (PostgreSQL hot paths): under a SQLAlchemy connection
(`fetch`), taken from the pool on its own (`fetch_pooled`, for `Operation.fetch`), or in a transaction of the
driver's own on a pooled connection (`DriverTransaction`, for `db.driver_transaction()`).

SQLAlchemy builds the schema and most statements; on the few calls that run thousands of times a second, its
per-execution work costs as much as the database does (bench/memory.py: get_memory 1,400 → 2,800 reads/s at
concurrency 16). asyncpg caches each statement's preparation per connection. Errors become StratusErrors through the one
translator (kit/failures.py), as every other driver error does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

import asyncpg
from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from stratus_db.errors import DatabaseUnavailableError, StratusError
from stratus_db.kit.failures import failure_of, means_lost, translate

DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
)
"""What a statement sent on the driver may raise: the server's refusals, the driver's own, a broken socket.
InternalClientError is no InterfaceError: asyncpg raises it when its protocol is stuck in another state, as after
the server ended the session between two statements ("cannot switch to state 12; another operation (2) is in
progress") before the closed socket was noticed."""


def _connection_lost(exc: Exception, driver_connection: asyncpg.Connection) -> bool:
    """Whether `exc` left the connection unusable: closed under the statement (asyncpg raises
    ConnectionDoesNotExistError, a PostgresError of class 08, or the server's FATAL shutdown error), broken on the
    socket, or its protocol stuck (InternalClientError). A client-side refusal (wrong number of arguments, a value
    it cannot encode) leaves it sound."""
    return (
        driver_connection.is_closed()
        or isinstance(exc, OSError | asyncpg.exceptions.InternalClientError)
        or means_lost(failure_of(exc))
    )


async def _failed(
    exc: Exception,
    driver_connection: asyncpg.Connection,
    invalidate: Callable[[BaseException], Awaitable[Any]],
    *,
    read_only: bool,
) -> StratusError:
    """The StratusError for a statement that raised `exc`, after invalidating the connection if it is lost."""
    lost = _connection_lost(exc, driver_connection)
    if lost:
        await invalidate(exc)  # never hand a broken connection to the next caller
    # A write may or may not have run when the connection broke; a read is safe to repeat.
    return translate(exc, where="PostgreSQL", lost=lost, may_have_committed=not read_only)


_BEGUN = "stratus_transaction_begun"
"""Key in a connection's `info`: whether SQLAlchemy has sent its transaction's BEGIN (see `install`)."""


def install(engine: Engine) -> None:
    """Track, through public events only, whether SQLAlchemy's asyncpg adapter has sent BEGIN.

    The adapter sends BEGIN with its own first statement, not at `begin()`: a statement sent straight on the driver
    before any would run outside the transaction and commit on its own. `begin()` clears the mark, and every
    statement SQLAlchemy sends (SAVEPOINT included) sets it, just before the adapter begins.
    """
    event.listen(engine, "begin", _not_begun)
    event.listen(engine, "before_cursor_execute", _begun)


def _not_begun(connection: Connection) -> None:
    connection.info[_BEGUN] = False


def _begun(connection: Connection, *_statement: Any) -> None:
    connection.info[_BEGUN] = True


async def _in_transaction(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under `conn`, inside `conn`'s transaction: when no statement has begun it yet, a
    trivial one through SQLAlchemy does (a round trip, only for a transaction whose first statement is the
    driver's). Nothing is sent when the connection is in AUTOCOMMIT or outside a transaction."""
    if (
        conn.in_transaction()
        and not conn.info.get(_BEGUN, True)
        and conn.sync_connection is not None
        and conn.sync_connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT"
    ):
        # Its errors are SQLAlchemy's, translated by the unit of work around this one.
        await conn.exec_driver_sql("SELECT 1")
    driver_connection = (await conn.get_raw_connection()).driver_connection
    assert driver_connection is not None, "a checked-out connection always has its driver connection"
    return driver_connection


async def fetch(
    conn: AsyncConnection, sql: str, *arguments: Any, read_only: bool = False
) -> list[dict[str, Any]]:
    """Run `sql` (with $1, $2… placeholders) as a prepared statement; rows as dicts (jsonb already decoded).

    Raises:
        DatabaseUnavailableError: the connection is or gets lost (retryable when nothing can have been written).
        TransientDatabaseError / DatabaseError: the server refused the statement.
    """
    driver_connection = await _in_transaction(conn)
    return await _fetch(driver_connection, conn.invalidate, sql, arguments, read_only)


async def fetch_pooled(
    pooled: PoolProxiedConnection, sql: str, *arguments: Any, read_only: bool = False
) -> list[dict[str, Any]]:
    """`fetch` on a connection taken straight from the pool (`AsyncEngine.raw_connection()`), which has no
    transaction: the statement commits as it completes. Raises as `fetch` does."""
    driver_connection = pooled.driver_connection
    assert driver_connection is not None, "a checked-out connection always has its driver connection"
    # Invalidating closes the driver connection, which awaits the driver: SQLAlchemy's pool does that in a greenlet.
    return await _fetch(
        driver_connection, partial(greenlet_spawn, pooled.invalidate), sql, arguments, read_only
    )


async def _fetch(
    driver_connection: asyncpg.Connection,
    invalidate: Callable[[BaseException], Awaitable[Any]],
    sql: str,
    arguments: tuple[Any, ...],
    read_only: bool,
) -> list[dict[str, Any]]:
    if driver_connection.is_closed():
        await invalidate(asyncpg.ConnectionDoesNotExistError("the server closed the pooled connection"))
        raise DatabaseUnavailableError(
            "the pooled connection to PostgreSQL was closed; nothing was sent", retryable=True
        )
    try:
        records = await driver_connection.fetch(sql, *arguments)
    except DRIVER_ERRORS as exc:
        raise await _failed(exc, driver_connection, invalidate, read_only=read_only) from exc
    return [dict(record) for record in records]


class DriverTransaction:
    """A transaction on a connection taken straight from the pool, sent by asyncpg alone (BEGIN, the statements,
    COMMIT): no SQLAlchemy Connection or transaction is built around it, which saves their client CPU and keeps
    SQLAlchemy from having to be told that a transaction began (see `_in_transaction`).

    SQLAlchemy's reset on return knows nothing of this transaction: a connection whose transaction was not ended for
    sure (cancelled during BEGIN, COMMIT or ROLLBACK, or a failed ROLLBACK) is discarded, never handed on; the next
    caller would otherwise work inside it, its writes acknowledged and never committed.
    """

    def __init__(self, pooled: PoolProxiedConnection) -> None:
        connection = pooled.driver_connection
        assert connection is not None, "a checked-out connection always has its driver connection"
        self._connection: asyncpg.Connection = connection
        self._invalidate = partial(greenlet_spawn, pooled.invalidate)
        self._driver_transaction = connection.transaction()

    async def fetch(self, sql: str, *arguments: Any) -> list[dict[str, Any]]:
        """Run `sql` inside the transaction. Raises as `fetch` does."""
        return await _fetch(self._connection, self._invalidate, sql, arguments, read_only=False)

    async def _discard(self, reason: BaseException) -> None:
        # Shielded: a second cancellation must not leave the connection in the pool half-discarded.
        await asyncio.shield(self._invalidate(reason))

    async def __aenter__(self) -> DriverTransaction:
        try:
            await self._driver_transaction.start()
        except DRIVER_ERRORS as exc:
            raise await _failed(
                exc, self._connection, self._invalidate, read_only=True
            ) from exc  # nothing sent
        except BaseException as exc:
            await self._discard(exc)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        if exc_type is not None:
            if self._connection.is_closed():
                return
            try:
                await self._driver_transaction.rollback()
            except DRIVER_ERRORS as exc:
                await self._discard(exc)  # the body's own error is what the caller gets
            except BaseException as exc:
                await self._discard(exc)
                raise
            return
        try:
            await self._driver_transaction.commit()
        except DRIVER_ERRORS as exc:
            # Lost during COMMIT, the transaction may have committed.
            raise await _failed(exc, self._connection, self._invalidate, read_only=False) from exc
        except BaseException as exc:
            await self._discard(exc)
            raise


async def copy_records(
    conn: AsyncConnection, table: str, columns: Sequence[str], records: Iterable[Sequence[Any]]
) -> None:
    """COPY `records` into `table` (binary COPY, the fastest way into PostgreSQL), inside `conn`'s transaction.

    Values go through the connection's codecs, as `fetch`'s arguments do (jsonb as a JSON string).

    Raises:
        DatabaseUnavailableError / TransientDatabaseError / DatabaseError: as for `fetch`.
    """
    driver_connection = await _in_transaction(conn)
    try:
        await driver_connection.copy_records_to_table(table, records=records, columns=list(columns))
    except DRIVER_ERRORS as exc:
        raise await _failed(exc, driver_connection, conn.invalidate, read_only=False) from exc
