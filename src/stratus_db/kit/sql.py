"""Statements whose spelling differs by dialect but whose meaning does not."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Date, Table
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
