"""The one translator of driver errors into StratusErrors, keyed on SQLSTATE.

Whatever raised it — SQLAlchemy (its DBAPIError around asyncpg's or sqlite3's error) or asyncpg on the driver path —
an error is reduced to its SQLSTATE (SQLite's result codes are mapped to the PostgreSQL codes that mean the same),
its constraint and whether the connection was lost; the StratusError follows from those alone, with the facts a
caller acts on (`retryable`, `violation`, `constraint`) as fields. Messages name the kind of error, never the
server's text: that text can quote the statement's values, which may be what a user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from sqlalchemy.exc import DBAPIError

from stratus_db.errors import (
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    StratusError,
    TransientDatabaseError,
    Violation,
)

ROLLED_BACK_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
"""Serialization failure, deadlock, lock not available: the server rolled the work back, so a retry is safe."""
CONNECTION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
"""Administrator, crash or startup shutdown: the server ends the session. (Class 08, connection exceptions, too.)"""
_VIOLATIONS = {
    "23505": Violation.unique,
    "23503": Violation.foreign_key,
    "23514": Violation.check,
    "23502": Violation.not_null,
}
_SQLITE_SQLSTATES = {
    "SQLITE_CONSTRAINT_UNIQUE": "23505",
    "SQLITE_CONSTRAINT_PRIMARYKEY": "23505",
    "SQLITE_CONSTRAINT_FOREIGNKEY": "23503",
    "SQLITE_CONSTRAINT_CHECK": "23514",
    "SQLITE_CONSTRAINT_NOTNULL": "23502",
    "SQLITE_CONSTRAINT": "23000",
    "SQLITE_BUSY": "55P03",
    "SQLITE_BUSY_SNAPSHOT": "40001",
    "SQLITE_BUSY_TIMEOUT": "55P03",
    "SQLITE_LOCKED": "55P03",
    "SQLITE_FULL": "53100",
}
"""sqlite3's extended result names (`sqlite_errorname`), as the PostgreSQL SQLSTATE of the same meaning."""


@dataclass(frozen=True)
class Failure:
    """What the translation needs to know of a driver error."""

    sqlstate: str | None
    constraint: str | None
    kind: str
    """The error's class, SQLSTATE and constraint, for messages: no values, no statement text."""

    @property
    def violation(self) -> Violation | None:
        """The kind of integrity rule broken (SQLSTATE class 23), or None."""
        if self.sqlstate is None or not self.sqlstate.startswith("23"):
            return None
        return _VIOLATIONS.get(self.sqlstate, Violation.other)


def failure_of(exc: BaseException) -> Failure:
    """The SQLSTATE and constraint of `exc`: an asyncpg or sqlite3 error, or SQLAlchemy's DBAPIError around one."""
    original: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    # SQLAlchemy's asyncpg adapter raises its own error class, caused by asyncpg's (which names the constraint).
    driver = original.__cause__ if isinstance(original.__cause__, asyncpg.PostgresError) else original
    sqlstate = getattr(driver, "sqlstate", None) or getattr(original, "sqlstate", None)
    constraint = getattr(driver, "constraint_name", None)
    sqlite_name = getattr(original, "sqlite_errorname", None)
    if sqlstate is None and sqlite_name is not None:
        # An extended name not listed falls back to its primary code's: SQLITE_CONSTRAINT_TRIGGER → SQLITE_CONSTRAINT.
        primary = "_".join(sqlite_name.split("_")[:2])
        sqlstate = _SQLITE_SQLSTATES.get(sqlite_name) or _SQLITE_SQLSTATES.get(primary)
        if sqlstate is not None and sqlstate.startswith("23"):
            # SQLite names no constraint: it names the columns ("users.email") or the CHECK's expression.
            constraint = str(original).partition(": ")[2] or None
    parts = [type(driver).__name__]
    if sqlstate:
        parts.append(f"SQLSTATE {sqlstate}")
    if constraint:
        parts.append(f"constraint {constraint}")
    return Failure(sqlstate=sqlstate, constraint=constraint, kind=", ".join(parts))


def violation_of(exc: BaseException) -> Violation | None:
    """Which integrity rule `exc` broke, for a repository that answers it with a domain error; None if none."""
    return failure_of(exc).violation


def means_lost(failure: Failure) -> bool:
    """Whether the SQLSTATE alone says that the session is over (class 08, or the server's shutdown errors)."""
    sqlstate = failure.sqlstate or ""
    return sqlstate.startswith("08") or sqlstate in CONNECTION_LOST_SQLSTATES


def translate(exc: BaseException, *, where: str, lost: bool, may_have_committed: bool) -> StratusError:
    """The StratusError for driver error `exc`.

    Args:
        where: the database, for messages ("PostgreSQL at host:5432/db").
        lost: the path found the connection unusable (closed, broken socket, stuck protocol); a SQLSTATE that
            ends the session counts as lost too.
        may_have_committed: a lost connection may have committed the work (a write in flight, a COMMIT): then
            repeating it is not safe.
    """
    failure = failure_of(exc)
    if lost or means_lost(failure):
        return DatabaseUnavailableError(
            f"lost the connection to {where} ({failure.kind})", retryable=not may_have_committed
        )
    if failure.sqlstate in ROLLED_BACK_SQLSTATES:
        return TransientDatabaseError(
            f"the database aborted the transaction ({failure.kind}); nothing was written, try again"
        )
    if (violation := failure.violation) is not None:
        return ConflictError(
            f"the change breaks a database rule ({failure.kind})",
            violation=violation,
            constraint=failure.constraint,
        )
    if failure.sqlstate is None and not isinstance(exc, DBAPIError):
        return DatabaseError(f"the driver refused the statement ({failure.kind})")
    return DatabaseError(f"the database refused the operation ({failure.kind})")
