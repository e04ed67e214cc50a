"""Concurrent store_memory calls: on PostgreSQL they are coalesced (memory/coalescing.py); on both backends every
caller gets its own result or its own error, the audit trail stays exact, and a store in a caller's transaction
belongs to that transaction."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from stratus_db import (
    AuditManager,
    Database,
    MemoryEntry,
    MemoryManager,
    NotFoundError,
    UserManager,
    ValidationError,
)
from stratus_db.models import MemoryRow
from tests.fixtures.databases import empty_all_tables, handles_on
from tests.fixtures.factories import count_rows, create_user


async def _stored_values(db: Database, user_id: uuid.UUID) -> dict[str, Any]:
    async with db.transaction(read_only=True) as conn:
        rows = await conn.execute(select(MemoryRow.key, MemoryRow.value).where(MemoryRow.user_id == user_id))
        return {row.key: row.value for row in rows}


def _batches(db: Database) -> int:
    count: int = db.metrics()["operations"].get("memory.store_batch", {}).get("count", 0)
    return count


async def test_concurrent_updates_each_get_their_own_result_and_audit_row(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    user = await create_user(users)
    other = await create_user(users)
    owners = [user, other]
    for index in range(20):
        await memories.store_memory(owners[index % 2].user_id, f"k{index}", f"old {index}", "long_term", 0.5)
    batches_before = _batches(db)

    results = await asyncio.gather(
        *(
            memories.store_memory(
                owners[index % 2].user_id, f"k{index}", f"new {index}", importance_score=0.7
            )
            for index in range(20)
        )
    )

    assert [(entry.key, entry.value, entry.importance_score) for entry in results] == [
        (f"k{index}", f"new {index}", 0.7) for index in range(20)
    ]
    assert all(entry.user_id == owners[index % 2].user_id for index, entry in enumerate(results))
    stored = await _stored_values(db, user.user_id) | await _stored_values(db, other.user_id)
    assert stored == {f"k{index}": f"new {index}" for index in range(20)}
    for index, entry in enumerate(results):
        events = (await AuditManager(db).query(record_id=entry.memory_id)).items
        assert [(e.action, e.old_values, e.new_values) for e in events] == [
            (
                "update",
                {"value": f"old {index}", "importance_score": 0.5},
                {"value": f"new {index}", "importance_score": 0.7},
            ),
            ("create", None, events[1].new_values),
        ]
        assert events[0].user_id == entry.user_id
    if db.backend == "postgresql":
        assert 1 <= _batches(db) - batches_before < 20, "the concurrent updates were written together"


async def test_a_bad_store_among_good_ones_fails_alone(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    user = await create_user(users)
    await memories.store_memory(user.user_id, "cma_validade", "2027-03-01", "critical", 1.0)
    for index in range(6):
        await memories.store_memory(user.user_id, f"k{index}", "old", "long_term", 0.5)
    audit_rows = await count_rows(db, "audit_log")

    outcomes = await asyncio.gather(
        *(memories.store_memory(user.user_id, f"k{index}", f"new {index}") for index in range(3)),
        # Known to be wrong only once the stored tier is read: a critical memory cannot be given a lifetime.
        memories.store_memory(user.user_id, "cma_validade", "2028-03-01", ttl=60),
        memories.store_memory(uuid.uuid4(), "k0", "nobody's"),
        *(memories.store_memory(user.user_id, f"k{index}", f"new {index}") for index in range(3, 6)),
        return_exceptions=True,
    )

    good = [outcome for outcome in outcomes if isinstance(outcome, MemoryEntry)]
    assert [entry.value for entry in good] == [f"new {index}" for index in range(6)]
    assert isinstance(outcomes[3], ValidationError)
    assert "critical memories never expire" in str(outcomes[3])
    assert isinstance(outcomes[4], NotFoundError)
    stored = await _stored_values(db, user.user_id)
    assert stored == {"cma_validade": "2027-03-01"} | {f"k{index}": f"new {index}" for index in range(6)}
    assert await count_rows(db, "audit_log") == audit_rows + 6


async def test_concurrent_stores_of_one_key_leave_an_unbroken_audit_chain(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    user = await create_user(users)
    first = await memories.store_memory(user.user_id, "base", "v0", "long_term", 0.5)

    results = await asyncio.gather(
        *(memories.store_memory(user.user_id, "base", f"v{n}") for n in range(1, 9))
    )

    assert {entry.memory_id for entry in results} == {first.memory_id}
    events = list(reversed((await AuditManager(db).query(record_id=first.memory_id)).items))
    assert [event.action for event in events] == ["create"] + ["update"] * 8
    # Each update starts from what the one before it stored: none was decided on a stale row.
    chain = ["v0"] + [event.new_values["value"] for event in events[1:]]
    assert [event.old_values["value"] for event in events[1:]] == chain[:-1]
    assert sorted(chain) == [f"v{n}" for n in range(9)]
    assert (await _stored_values(db, user.user_id))["base"] == chain[-1]


async def test_mixed_concurrent_stores_create_update_renew_and_skip_exactly(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    user = await create_user(users)
    await memories.store_memory(user.user_id, "same", "x", "long_term", 0.5)
    await memories.store_memory(user.user_id, "changes", "x", "long_term", 0.5)
    audit_rows = await count_rows(db, "audit_log")

    same, changed, created = await asyncio.gather(
        memories.store_memory(user.user_id, "same", "x", "long_term", 0.5),
        memories.store_memory(user.user_id, "changes", "y", "short_term"),
        memories.store_memory(user.user_id, "new", "z", "medium_term"),
    )

    assert (same.value, same.updated_at == same.created_at) == ("x", True), (
        "storing what is stored writes nothing"
    )
    assert (changed.value, changed.memory_type, changed.expires_at is not None) == ("y", "short_term", True)
    assert (created.value, created.memory_type, created.access_count) == ("z", "medium_term", 0)
    assert await count_rows(db, "audit_log") == audit_rows + 2


async def test_a_store_in_a_callers_transaction_belongs_to_it(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    user = await create_user(users)
    await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
    audit_rows = await count_rows(db, "audit_log")

    seen_inside: list[Any] = []

    async def store_then_roll_back() -> None:
        async with db.transaction() as tx:
            stored = await memories.store_memory(user.user_id, "base", "SBKP", tx=tx)
            inside = (await tx.execute(select(MemoryRow.value).where(MemoryRow.key == "base"))).scalar_one()
            seen_inside.extend([stored.value, inside])
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await store_then_roll_back()

    assert seen_inside == ["SBKP", "SBKP"], (
        "the store ran in the caller's transaction, not in a batch of its own"
    )
    assert (await _stored_values(db, user.user_id))["base"] == "SBGR"
    assert await count_rows(db, "audit_log") == audit_rows


@pytest.fixture
async def postgres_only(postgresql_db: Database) -> AsyncIterator[Database]:
    yield postgresql_db
    await empty_all_tables(postgresql_db)


async def test_a_row_changed_between_the_batch_read_and_its_write_is_stored_on_the_locking_path(
    postgres_only: Database,
) -> None:
    db = postgres_only
    memories = MemoryManager(db)
    user = await create_user(UserManager(db))
    entry = await memories.store_memory(user.user_id, "base", "read by the batch", "long_term", 0.5)

    async with db.engine.connect() as intruder:
        # Another writer locks the row and changes it; the batch has already read it (no lock needed to read).
        await intruder.execute(
            update(MemoryRow).where(MemoryRow.memory_id == entry.memory_id).values(value="changed meanwhile")
        )
        store = asyncio.create_task(memories.store_memory(user.user_id, "base", "ours"))
        async with db.engine.connect() as observer:
            deadline = time.perf_counter() + 10  # a hang guard, not a performance bound
            waiting = 0
            while not waiting and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
                waiting = (
                    await observer.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND starts_with(query, :statement)"
                        ),
                        {"statement": "-- the coalesced store's write"},
                    )
                ).scalar_one()
                await observer.commit()  # pg_stat_activity is read once per transaction
        assert waiting, "the batch's write waits for the other writer's lock"
        await intruder.commit()
        stored = await store

    assert stored.value == "ours"
    latest = (await AuditManager(db).query(record_id=entry.memory_id, limit=1)).items[0]
    assert (latest.action, latest.old_values["value"], latest.new_values["value"]) == (
        "update",
        "changed meanwhile",
        "ours",
    )


async def test_concurrent_new_keys_are_created_together_each_with_its_audit_row(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    owners = [await create_user(users) for _ in range(3)]
    batches_before = _batches(db)

    outcomes = await asyncio.gather(
        *(
            memories.store_memory(owners[n % 3].user_id, f"nova_{n}", f"valor {n}", "long_term", 0.6)
            for n in range(24)
        ),
        memories.store_memory(uuid.uuid4(), "nova", "de ninguém"),
        return_exceptions=True,
    )

    created = [outcome for outcome in outcomes[:24] if isinstance(outcome, MemoryEntry)]
    assert [(e.key, e.value, e.memory_type, e.importance_score, e.access_count) for e in created] == [
        (f"nova_{n}", f"valor {n}", "long_term", 0.6, 0) for n in range(24)
    ]
    assert isinstance(outcomes[24], NotFoundError)
    for n, entry in enumerate(created):
        assert entry.user_id == owners[n % 3].user_id
        events = (await AuditManager(db).query(record_id=entry.memory_id)).items
        assert [(e.action, e.user_id, e.old_values, e.new_values) for e in events] == [
            ("create", entry.user_id, None, entry.model_dump(mode="json"))
        ]
    stored: dict[str, Any] = {}
    for owner in owners:
        stored |= await _stored_values(db, owner.user_id)
    assert stored == {f"nova_{n}": f"valor {n}" for n in range(24)}
    if db.backend == "postgresql":
        # Created together: the memories of one batch share its time (the locking path takes one per store).
        assert len({entry.created_at for entry in created}) <= _batches(db) - batches_before < 24


async def _memory_count(db: Database, user_id: uuid.UUID) -> int:
    async with db.transaction(read_only=True) as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).select_from(MemoryRow).where(MemoryRow.user_id == user_id)
                )
            ).scalar_one()
        )


@pytest.fixture
async def other_processes(postgresql_db: Database) -> AsyncIterator[Callable[..., Database]]:
    async for opener in handles_on(postgresql_db):
        yield opener


async def test_two_processes_creating_new_keys_keep_a_user_within_the_cap(
    other_processes: Callable[..., Database],
) -> None:
    """Each process creates its new keys in batches (one transaction per batch: lock the owner, count, insert);
    together they never leave the user above the cap."""
    first, second = (other_processes(STRATUS_MEMORY_MAX_PER_USER=10) for _ in range(2))
    for trial in range(20):
        user = await create_user(UserManager(first))

        async def create_many(handle: Database, side: str, user_id: uuid.UUID = user.user_id) -> None:
            memories = MemoryManager(handle)
            await asyncio.gather(
                *(memories.store_memory(user_id, f"{side}_{n}", n, "long_term") for n in range(8))
            )

        await asyncio.gather(create_many(first, "a"), create_many(second, "b"))
        assert await _memory_count(first, user.user_id) == 10, f"trial {trial}"


async def test_a_key_another_transaction_is_creating_holds_up_no_other_store(
    other_processes: Callable[..., Database],
) -> None:
    """A batch whose creation meets a key that another transaction is inserting stops waiting at once
    (CREATE_LOCK_TIMEOUT) and sends its creations to the locking path: the other stores queued in the process go
    on while that transaction is still open."""
    holder, process = other_processes(), other_processes()
    owner = await create_user(UserManager(holder))
    bystander = await create_user(UserManager(holder))
    memories = MemoryManager(process)
    async with holder.transaction() as tx:
        # A critical memory: its creation takes no owner lock, only the key's.
        await MemoryManager(holder).store_memory(owner.user_id, "cma", "2027-03", "critical", tx=tx)
        same_key = asyncio.create_task(memories.store_memory(owner.user_id, "cma", "2028-03", "critical"))
        unrelated = asyncio.create_task(memories.store_memory(bystander.user_id, "base", "SBGR", "long_term"))
        done, _pending = await asyncio.wait({unrelated}, timeout=30)  # a bound on a hang, not a speed target
        assert unrelated in done, "the unrelated store went on while the other transaction held the key"
        assert not same_key.done(), (
            "the store of the held key waits for that transaction, on the locking path"
        )
    stored = await same_key
    assert (stored.key, stored.value) == ("cma", "2028-03")
    assert (await unrelated).value == "SBGR"


async def test_an_expiry_given_in_another_time_zone_is_stored_and_audited_in_utc(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    user = await create_user(users)
    brasilia = datetime.now(timezone(timedelta(hours=-3))) + timedelta(days=2)

    entry = await memories.store_memory(user.user_id, "voo", "amanhã", "short_term", expires_at=brasilia)

    assert entry.expires_at == brasilia
    assert entry.expires_at is not None
    assert entry.expires_at.utcoffset() == timedelta(0)
    (event,) = (await AuditManager(db).query(record_id=entry.memory_id)).items
    assert event.new_values == entry.model_dump(mode="json"), "the audit row records what is stored"
