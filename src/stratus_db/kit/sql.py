"""Statements whose spelling differs by dialect but whose meaning does not, and the columns of batch statements."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Date, SmallInteger, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from stratus_db.kit.histogram import FLOOR_S, GROWTH, LAST_BUCKET, bucket_of


def insert_for(conn: AsyncConnection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with `on_conflict_do_nothing` / `on_conflict_do_update`, which both dialects spell alike."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class utc_day(FunctionElement[date]):  # lower case: it reads as the SQL function it is
    """The UTC calendar day of a UTCDateTime column: `timezone('UTC', t)::date` / the date part of SQLite's text."""

    type = Date()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(timezone('UTC', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # UTCDateTime stores SQLite timestamps as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff', so the day is its first ten
    # characters. Not date(): it rounds to milliseconds, and 9999-12-31 23:59:59.9995 or later has no date at all.
    return f"substr({compiler.process(element.clauses, **kw)}, 1, 10)"


class local_day(FunctionElement[date]):  # lower case: it reads as the SQL function it is
    """The calendar day of a UTCDateTime column in an IANA time zone: `timezone(zone, t)::date` on PostgreSQL, the
    `stratus_local_day` function (zoneinfo) that every SQLite connection has (register_sqlite_functions)."""

    type = Date()
    inherit_cache = True
    name = "local_day"


@compiles(local_day, "postgresql")
def _local_day_postgresql(element: local_day, compiler: SQLCompiler, **kw: Any) -> str:
    instant, zone = element.clauses
    return f"CAST(timezone({compiler.process(zone, **kw)}, {compiler.process(instant, **kw)}) AS DATE)"


@compiles(local_day, "sqlite")
def _local_day_sqlite(element: local_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"stratus_local_day({compiler.process(element.clauses, **kw)})"


class week_start(FunctionElement[date]):  # lower case: it reads as the SQL function it is
    """The Monday of the ISO week of a date column."""

    type = Date()
    inherit_cache = True
    name = "week_start"


@compiles(week_start, "postgresql")
def _week_start_postgresql(element: week_start, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(date_trunc('week', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(week_start, "sqlite")
def _week_start_sqlite(element: week_start, compiler: SQLCompiler, **kw: Any) -> str:
    # Six days back, then forward to the next Monday (or stay on it): the Monday on or before the day.
    return f"date({compiler.process(element.clauses, **kw)}, '-6 days', 'weekday 1')"


class month_start(FunctionElement[date]):  # lower case: it reads as the SQL function it is
    """The first day of the month of a date column."""

    type = Date()
    inherit_cache = True
    name = "month_start"


@compiles(month_start, "postgresql")
def _month_start_postgresql(element: month_start, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(date_trunc('month', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(month_start, "sqlite")
def _month_start_sqlite(element: month_start, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)}, 'start of month')"


class response_time_bucket(FunctionElement[int]):  # lower case: it reads as the SQL function it is
    """The logarithmic bucket of a duration in seconds (kit/histogram.py bucket_of), in SQL."""

    type = SmallInteger()
    inherit_cache = True
    name = "response_time_bucket"


@compiles(response_time_bucket, "postgresql")
def _bucket_postgresql(element: response_time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return (
        f"CAST(CASE WHEN {seconds} <= {FLOOR_S} THEN 0 ELSE least(floor(ln({seconds} / {FLOOR_S}) / ln({GROWTH})), "
        f"{LAST_BUCKET}) END AS SMALLINT)"
    )


@compiles(response_time_bucket, "sqlite")
def _bucket_sqlite(element: response_time_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    return f"stratus_response_time_bucket({compiler.process(element.clauses, **kw)})"


def _sqlite_local_day(stored: str | None, zone: str) -> str | None:
    # UTCDateTime stores 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC on SQLite.
    if stored is None:
        return None
    instant = datetime.fromisoformat(stored).replace(tzinfo=UTC)
    return instant.astimezone(_zone(zone)).date().isoformat()


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """The functions local_day and response_time_bucket compile to on SQLite, on a new driver connection."""
    dbapi_connection.create_function("stratus_local_day", 2, _sqlite_local_day, deterministic=True)
    dbapi_connection.create_function(
        "stratus_response_time_bucket",
        1,
        lambda seconds: None if seconds is None else bucket_of(seconds),
        deterministic=True,
    )


@dataclass(frozen=True)
class BatchColumns:
    """The columns a batch statement takes as one array each (PostgreSQL `unnest`), named and typed in one place,
    so that the statement's parameter list, its column list and its arguments cannot drift apart."""

    columns: tuple[tuple[str, str], ...]
    """(name, PostgreSQL type) pairs, in parameter order."""

    def __add__(self, other: BatchColumns) -> BatchColumns:
        return BatchColumns(self.columns + other.columns)

    @property
    def names(self) -> str:
        """The column list of the unnest's alias: `memory_id, user_id, …`."""
        return ", ".join(name for name, _type in self.columns)

    def unnest(self, first: int) -> str:
        """`unnest($first::type[], …)`: one array parameter per column, numbered from `first`."""
        arrays = ", ".join(
            f"${first + offset}::{type_}[]" for offset, (_name, type_) in enumerate(self.columns)
        )
        return f"unnest({arrays})"

    def parameter(self, name: str) -> str:
        """`$n` of column `name` in a statement that takes one row's values as its first parameters, in this order."""
        return f"${[column for column, _type in self.columns].index(name) + 1}"

    def after(self, first: int) -> int:
        """The number of the first parameter after this batch's arrays."""
        return first + len(self.columns)

    def arrays(self, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        """The arguments: one list per column, of the rows' values in order."""
        return [[row[name] for row in rows] for name, _type in self.columns]


async def begin_snapshot(conn: AsyncConnection) -> None:
    """Make the transaction just begun on `conn` a snapshot: REPEATABLE READ on PostgreSQL (before any query). On
    SQLite a read transaction in WAL mode already sees one state throughout."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
