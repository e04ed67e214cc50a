"""Storing over a memory compares values as JSON — by type and value — on both store paths: `true` over a stored `1`
is a change (written, audited, read back as `true`), and an equal value is no change, whatever its key order or the
time zone its expiry was written in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db import AuditManager, Database, MemoryEntry, MemoryManager, UserManager
from tests.fixtures.factories import count_rows, create_user

BRASILIA = timezone(timedelta(hours=-3))
PATHS = ["alone", "in_a_transaction"]
"""How the second store runs: alone (coalesced with concurrent stores on PostgreSQL) or in a caller's transaction
(the locking path on both backends)."""


async def _store(
    db: Database, memories: MemoryManager, path: str, user_id: Any, key: str, value: Any, **options: Any
) -> MemoryEntry:
    if path == "alone":
        return await memories.store_memory(user_id, key, value, **options)
    async with db.transaction() as tx:
        return await _store_in(memories, tx, user_id, key, value, **options)


async def _store_in(
    memories: MemoryManager, tx: AsyncConnection, user_id: Any, key: str, value: Any, **options: Any
) -> MemoryEntry:
    return await memories.store_memory(user_id, key, value, tx=tx, **options)


def _as_json(value: Any) -> str:
    """JSON text keeps what Python equality hides: `true` is not `1`, `1.0` is not `1`."""
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("stored", "new"),
    [
        (1, True),
        (True, 1),
        (0, False),
        # Numbers inside a document: SQLite's JSON columns have numeric affinity, so a top-level 1.0 is stored as 1.
        ({"n": 1}, {"n": 1.0}),
        ([1.0], [1]),
        ({"ativo": 1}, {"ativo": True}),
        ({"horas": [95, 1]}, {"horas": [95.0, 1]}),
        ("1", 1),
    ],
)
async def test_a_value_of_another_json_type_is_a_change(
    db: Database, users: UserManager, memories: MemoryManager, path: str, stored: Any, new: Any
) -> None:
    user = await create_user(users)
    first = await memories.store_memory(user.user_id, "flag", stored, "long_term", 0.5)
    audit_rows = await count_rows(db, "audit_log")

    returned = await _store(db, memories, path, user.user_id, "flag", new)

    assert _as_json(returned.value) == _as_json(new)
    read = await memories.get_memory(user.user_id, "flag")
    assert read is not None
    assert _as_json(read.value) == _as_json(new)
    assert await count_rows(db, "audit_log") == audit_rows + 1
    (event, _created) = (await AuditManager(db).query(record_id=first.memory_id)).items
    assert event.action == "update"
    assert _as_json(event.old_values) == _as_json({"value": stored})
    assert _as_json(event.new_values) == _as_json({"value": new})


@pytest.mark.parametrize("path", PATHS)
async def test_an_equal_json_value_is_no_change(
    db: Database, users: UserManager, memories: MemoryManager, path: str
) -> None:
    user = await create_user(users)
    expiry = datetime(2099, 1, 1, 12, tzinfo=UTC)
    value = {"aeronave": "PR-ABC", "horas": 95.5, "ativo": True, "bases": ["SBGR", 3]}
    await memories.store_memory(user.user_id, "perfil", value, "medium_term", 0.5, expires_at=expiry)
    audit_rows = await count_rows(db, "audit_log")

    # The same object with its keys in another order, the same expiry instant written in Brasília's time.
    reordered = dict(reversed(list(value.items())))
    returned = await _store(
        db, memories, path, user.user_id, "perfil", reordered, expires_at=expiry.astimezone(BRASILIA)
    )

    assert returned.value == value
    assert returned.expires_at == expiry
    assert await count_rows(db, "audit_log") == audit_rows
