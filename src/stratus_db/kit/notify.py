"""Invalidation messages between processes that share a database: PostgreSQL LISTEN/NOTIFY, or a change stamp
in the SQLite file.

Both are transactional: a message sent (a stamp written) inside a transaction is seen when it commits, never if it
rolls back.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg
from sqlalchemy import event, func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.kit.tasks import start_background
from stratus_db.logging import Logger

MAX_PAYLOAD_BYTES = 7900
"""PostgreSQL refuses NOTIFY payloads of 8000 bytes or more."""


class Notifier(Protocol):
    @property
    def listening(self) -> bool:
        """True while messages from other processes are being received (only then may a cache trust itself)."""

    async def start(self, on_message: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        """Deliver every message of the channel to `on_message`; call `on_gap` when some may have been missed."""

    async def publish(self, conn: AsyncConnection, payload: str) -> None:
        """Send `payload` to every listener when `conn`'s transaction commits."""

    def poll(self) -> None:
        """Deliver now what the database can only be asked for (SQLite), before a cached value is trusted."""

    async def stop(self) -> None: ...


class PostgresNotifier:
    """One dedicated asyncpg connection per process that LISTENs; reconnects, reporting a gap, when it is lost.
    Connecting waits at most `connect_timeout_s` (the settings' STRATUS_CONNECT_TIMEOUT_S, as the pool does).

    A connection that dies silently (a NAT or load balancer drops it without a reset) would otherwise look alive
    until the OS gave up on it, hours later, while every message meanwhile was lost: a heartbeat query every
    `heartbeat_s` that does not answer within `heartbeat_timeout_s` counts as a lost connection.
    """

    RECONNECT_DELAY_S = 0.5
    APPLICATION_NAME = "stratus_db:listen"
    """How the connection shows in pg_stat_activity (the pooled connections are `stratus_db`, kit/backends.py)."""

    def __init__(
        self,
        url: URL,
        channel: str,
        *,
        log: Logger,
        connect_timeout_s: float = 10.0,
        heartbeat_s: float = 5.0,
        heartbeat_timeout_s: float = 2.0,
    ) -> None:
        self._log = log
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_timeout_s = connect_timeout_s
        self._channel = channel
        self._heartbeat_s = heartbeat_s
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._connection: Any = None
        self._on_message: Callable[[str], None] | None = None
        self._on_gap: Callable[[], None] | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def listening(self) -> bool:
        return self._connection is not None and not self._connection.is_closed()

    async def start(self, on_message: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        self._on_message, self._on_gap = on_message, on_gap
        await self._connect()
        self._heartbeat = start_background(self._beat(), log=self._log, what="cache.notification_heartbeat")

    async def _beat(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self._heartbeat_s)
            connection = self._connection
            if connection is None or connection.is_closed():
                continue  # already lost: the reconnect loop is at work
            ping = asyncio.ensure_future(connection.fetchval("SELECT 1"))
            # Its failure is judged below; retrieved here too, so that a ping outliving this task (stop() cancels it
            # while waiting) is not reported as an exception nobody retrieved.
            ping.add_done_callback(lambda task: task.cancelled() or task.exception())
            # Not wait_for: cancelling the query would wait for the cancellation to reach a server that does not
            # answer. A ping left waiting fails when the connection is terminated.
            await asyncio.wait({ping}, timeout=self._heartbeat_timeout_s)
            if ping.done() and not ping.cancelled() and ping.exception() is None:
                continue
            if self._connection is connection:
                connection.terminate()  # no goodbye to a peer that does not answer
                self._lost(connection)

    async def _connect(self) -> None:
        connection = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout_s,
            server_settings={"application_name": self.APPLICATION_NAME},
        )
        await connection.add_listener(self._channel, self._deliver)
        connection.add_termination_listener(self._lost)
        self._connection = connection

    def _deliver(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        if self._on_message is not None:
            self._on_message(payload)

    def _lost(self, connection: object) -> None:
        if self._connection is not connection:
            return  # reported already (the heartbeat and the termination listener may both see one loss)
        self._connection = None
        if self._on_gap is not None:
            self._on_gap()  # messages sent while nobody listened are lost: the cache must forget everything
        if not self._stopped:
            self._reconnect = start_background(
                self._reconnect_until_done(), log=self._log, what="cache.notification_reconnect"
            )

    async def _reconnect_until_done(self) -> None:
        while not self._stopped and not self.listening:
            await asyncio.sleep(self.RECONNECT_DELAY_S)
            try:
                await self._connect()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                continue
            if self._on_gap is not None:
                # A read that began while nobody listened may finish now: it must not be trusted either.
                self._on_gap()

    async def publish(self, conn: AsyncConnection, payload: str) -> None:
        await conn.execute(select(func.pg_notify(self._channel, payload)))

    def poll(self) -> None:
        return None  # messages arrive on their own

    async def stop(self) -> None:
        self._stopped = True
        for task in (self._reconnect, self._heartbeat):
            if task is not None:
                task.cancel()
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=self._heartbeat_timeout_s)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                connection.terminate()  # a server that does not answer gets no goodbye


class SQLiteChangeStamp:
    """Processes sharing one SQLite file, which cannot message each other: every change of cached data writes a new
    random stamp into the file, inside its own transaction (the header's `PRAGMA user_version`, which nothing else
    here uses), and a cache reads the stamp before it trusts itself. A stamp that is not what this process last saw,
    or last wrote itself, reports a gap.

    Random, not a count: the stamp this process expects after its own commit is the one it wrote, which no other
    process will write again (one chance in 2³¹). With a count, a write rolled back (in a savepoint that a committed
    transaction dropped) or a COMMIT that failed would have had this process expect the very next value, and the
    next process to write it would have gone unnoticed. An expectation that is wrong that way now costs only a
    needless forgetting.

    The stamp says that something changed, not what: the other processes' caches then forget everything. Reading it
    costs about 4 µs on a connection of its own, used from the event loop's thread only (a header read through the
    WAL), which never waits for a lock: if it cannot read at once, the cache forgets everything instead.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._seen: int | None = None
        self._on_gap: Callable[[], None] | None = None

    @property
    def listening(self) -> bool:
        return self._connection is not None

    async def start(self, on_message: Callable[[str], None], on_gap: Callable[[], None]) -> None:
        self._on_gap = on_gap
        self._connection = sqlite3.connect(self._path, isolation_level=None, timeout=0)
        self._seen = self._read()

    def _read(self) -> int | None:
        assert self._connection is not None
        try:
            row = self._connection.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error:
            return None  # unreadable: assume the worst
        return None if row is None else int(row[0])

    def poll(self) -> None:
        if self._connection is None or self._on_gap is None:
            return
        stamp = self._read()
        if stamp is None or stamp != self._seen:
            self._seen = stamp
            self._on_gap()

    async def publish(self, conn: AsyncConnection, payload: str) -> None:
        # The transaction holds SQLite's write lock (BEGIN IMMEDIATE): nobody else writes a stamp meanwhile.
        before = int((await conn.exec_driver_sql("PRAGMA user_version")).scalar_one())
        stamp = before
        while stamp in (before, 0):  # 0: a file nobody stamped yet
            stamp = secrets.randbits(31)
        await conn.exec_driver_sql(f"PRAGMA user_version = {stamp}")  # a pragma takes no parameter; an int

        def committing() -> None:
            # Our own change (the caller invalidated its keys): the cache need not forget the rest, unless another
            # process wrote since this process last looked.
            if self._seen == before:
                self._seen = stamp

        event.listen(conn.sync_connection, "commit", lambda _connection: committing(), once=True)

    async def stop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
