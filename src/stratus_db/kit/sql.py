"""Statements whose spelling differs by dialect but whose meaning does not, and the columns of batch statements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Date, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement


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
