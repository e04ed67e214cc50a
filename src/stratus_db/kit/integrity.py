"""Which kind of rule an IntegrityError broke, on either backend (repositories turn it into a domain error)."""

from __future__ import annotations

from enum import StrEnum

import asyncpg
from sqlalchemy.exc import IntegrityError


class Violation(StrEnum):
    unique = "unique"
    foreign_key = "foreign_key"
    check = "check"
    not_null = "not_null"
    other = "other"


_PG_SQLSTATES = {
    "23505": Violation.unique,
    "23503": Violation.foreign_key,
    "23514": Violation.check,
    "23502": Violation.not_null,
}
_SQLITE_PREFIXES = {
    "UNIQUE constraint failed": Violation.unique,
    "FOREIGN KEY constraint failed": Violation.foreign_key,
    "CHECK constraint failed": Violation.check,
    "NOT NULL constraint failed": Violation.not_null,
}


def violation_of(exc: IntegrityError) -> Violation:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _PG_SQLSTATES:
        return _PG_SQLSTATES[sqlstate]
    message = str(exc.orig)
    for prefix, violation in _SQLITE_PREFIXES.items():
        if message.startswith(prefix):
            return violation
    return Violation.other


def broke_a_rule(exc: BaseException) -> bool:
    """Whether a translated error (a ConflictError, say) came from an integrity violation of the database, on
    either path (SQLAlchemy's IntegrityError, or asyncpg's class 23 on the driver path), not from a domain check."""
    return isinstance(exc.__cause__, IntegrityError | asyncpg.IntegrityConstraintViolationError)
