"""kit/failures.py: the one translator. A broken rule, on either backend and on either path, is a ConflictError that
says which kind of rule and which constraint; a lost connection says whether repeating is safe; no caller needs the
driver's exception."""

from __future__ import annotations

import sqlite3
import uuid

import asyncpg
import pytest
from sqlalchemy import Uuid, bindparam, text

from stratus_db import ConflictError, Database, MemoryManager, UserManager, Violation
from stratus_db.kit.failures import translate
from tests.fixtures.factories import count_rows, create_user

# A raw write that breaks each kind of rule, and the constraint each backend reports (SQLite names a CHECK, and the
# columns of a unique or not-null rule).
BROKEN_RULES = [
    pytest.param(
        "INSERT INTO users (user_id, name, email, email_index, role, licenses, preferences, created_at, updated_at, "
        "last_active) SELECT :fresh, name, email, email_index, role, licenses, preferences, created_at, updated_at, "
        "last_active FROM users",
        Violation.unique,
        {"postgresql": "ix_users_email_index", "sqlite": "users.email_index"},
        id="unique",
    ),
    pytest.param(
        "UPDATE memory_entries SET user_id = :fresh",
        Violation.foreign_key,
        {"postgresql": "fk_memory_entries_user_id_users", "sqlite": None},
        id="foreign_key",
    ),
    pytest.param(
        "UPDATE memory_entries SET importance_score = 2",
        Violation.check,
        {
            "postgresql": "ck_memory_entries_importance_in_unit_interval",
            "sqlite": "ck_memory_entries_importance_in_unit_interval",
        },
        id="check",
    ),
    pytest.param(
        "UPDATE users SET email = NULL",
        Violation.not_null,
        {"postgresql": None, "sqlite": "users.email"},
        id="not_null",
    ),
]


@pytest.mark.parametrize(("statement", "violation", "constraints"), BROKEN_RULES)
async def test_a_broken_rule_is_a_conflict_naming_its_kind_and_constraint(
    db: Database,
    users: UserManager,
    statement: str,
    violation: Violation,
    constraints: dict[str, str | None],
) -> None:
    user = await create_user(users)
    await MemoryManager(db).store_memory(user.user_id, "base", "SBGR")
    written = text(statement)
    if ":fresh" in statement:
        written = written.bindparams(bindparam("fresh", uuid.uuid4(), type_=Uuid()))
    with pytest.raises(ConflictError) as raised:
        async with db.transaction() as conn:
            await conn.execute(written)
    assert raised.value.violation is violation
    assert raised.value.constraint == constraints[db.backend]
    assert raised.value.status_code == 409
    assert await count_rows(db, "users") == 1
    stored = await MemoryManager(db).get_memory(user.user_id, "base")
    assert stored is not None
    assert stored.importance_score == 0.5, "nothing of the refused write stayed"


async def test_a_taken_email_is_a_unique_violation_through_the_public_api(
    db: Database, users: UserManager
) -> None:
    taken = await create_user(users)
    with pytest.raises(ConflictError, match="already exists") as raised:
        await create_user(users, email=taken.email)
    assert raised.value.violation is Violation.unique
    assert (
        raised.value.constraint
        == {"postgresql": "ix_users_email_index", "sqlite": "users.email_index"}[db.backend]
    )


def test_the_drivers_own_errors_translate_by_sqlstate() -> None:
    unique = asyncpg.exceptions.UniqueViolationError("duplicate key")
    conflict = translate(unique, where="PostgreSQL", lost=False, may_have_committed=False)
    assert isinstance(conflict, ConflictError)
    assert conflict.violation is Violation.unique

    deadlock = translate(
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        where="PostgreSQL",
        lost=False,
        may_have_committed=True,
    )
    assert deadlock.status_code == 503
    assert getattr(deadlock, "retryable", None) is True, "the server rolled it back: safe to repeat"

    ended = asyncpg.exceptions.AdminShutdownError("terminating connection")
    for may_have_committed in (False, True):
        lost = translate(ended, where="PostgreSQL", lost=False, may_have_committed=may_have_committed)
        assert "lost the connection" in lost.message
        assert getattr(lost, "retryable", None) is (not may_have_committed)

    refused = translate(
        asyncpg.InterfaceError("the server expects 1 argument"),
        where="PostgreSQL",
        lost=False,
        may_have_committed=False,
    )
    assert "driver refused" in refused.message


def test_a_sqlite_code_not_listed_falls_back_to_its_primary_code() -> None:
    """SQLite reports extended result codes; one the table does not list means what its primary code means."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.execute(
            "CREATE TRIGGER no_negatives BEFORE INSERT ON t WHEN new.x < 0 BEGIN SELECT RAISE(ABORT, 'negative'); END"
        )
        with pytest.raises(sqlite3.IntegrityError) as refused:
            connection.execute("INSERT INTO t VALUES (-1)")
    finally:
        connection.close()
    assert refused.value.sqlite_errorname == "SQLITE_CONSTRAINT_TRIGGER"
    conflict = translate(refused.value, where="SQLite file", lost=False, may_have_committed=False)
    assert isinstance(conflict, ConflictError)
    assert conflict.violation is Violation.other
