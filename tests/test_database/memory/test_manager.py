from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratus_db import (
    AuditEvent,
    AuditManager,
    Database,
    MemoryManager,
    NotFoundError,
    UserManager,
    ValidationError,
)
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user


async def _audit_of(db: Database, record_id: uuid.UUID) -> list[AuditEvent]:
    """One record's audit rows, newest first."""
    return (await AuditManager(db).query(record_id=record_id)).items


class TestStoreMemory:
    async def test_stores_a_new_key_with_its_audit_row(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        entry = await memories.store_memory(user.user_id, "base", "SBGR", "long_term", 0.9)

        assert (entry.key, entry.value, entry.memory_type, entry.importance_score) == (
            "base",
            "SBGR",
            "long_term",
            0.9,
        )
        assert entry.access_count == 0
        assert await count_rows(db, "memory_entries") == 1
        events = await _audit_of(db, entry.memory_id)
        assert [(e.action, e.new_values["value"]) for e in events] == [("create", "SBGR")]

    async def test_an_existing_key_is_updated_in_place_and_the_old_value_stays_in_the_audit(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        first = await memories.store_memory(
            user.user_id, "preferred_aircraft", "Cessna 152", "medium_term", 0.4
        )
        await memories.get_memory(user.user_id, "preferred_aircraft")
        second = await memories.store_memory(
            user.user_id, "preferred_aircraft", "Cessna 172", "long_term", 0.8
        )

        assert second.memory_id == first.memory_id
        assert (second.value, second.memory_type, second.importance_score) == ("Cessna 172", "long_term", 0.8)
        assert second.access_count == 1, "an update keeps the access count"
        assert second.created_at == first.created_at
        assert await count_rows(db, "memory_entries") == 1
        update = (await _audit_of(db, first.memory_id))[0]
        assert update.action == "update"
        assert update.old_values == {
            "value": "Cessna 152",
            "memory_type": "medium_term",
            "importance_score": 0.4,
            "expires_at": first.expires_at.isoformat().replace("+00:00", "Z") if first.expires_at else None,
        }
        assert update.new_values == {
            "value": "Cessna 172",
            "memory_type": "long_term",
            "importance_score": 0.8,
            "expires_at": None,  # long_term memories do not expire by default
        }

    async def test_storing_the_same_value_again_writes_nothing(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBKP", "long_term", 0.5)
        audit_rows = await count_rows(db, "audit_log")
        await memories.store_memory(user.user_id, "base", "SBKP", "long_term", 0.5)
        assert await count_rows(db, "audit_log") == audit_rows

    async def test_json_values_round_trip(self, users: UserManager, memories: MemoryManager) -> None:
        user = await create_user(users)
        value = {
            "aeronave": "PR-ABC",
            "horas": 95.5,
            "habilitações": ["MNTE", "IFR"],
            "ativo": True,
            "obs": None,
        }
        await memories.store_memory(user.user_id, "perfil", value, "long_term", 0.7)
        stored = await memories.get_memory(user.user_id, "perfil")
        assert stored is not None
        assert stored.value == value

    @pytest.mark.parametrize(
        ("arguments", "complaint"),
        [
            ({"importance_score": 1.5}, "importance_score"),
            ({"importance_score": -0.1}, "importance_score"),
            ({"importance_score": math.nan}, "importance_score"),
            ({"memory_type": "forever"}, "memory_type"),
            ({"key": ""}, "key"),
            ({"key": "a\x00b"}, "NUL"),
            ({"key": "k" * 201}, "key"),
            ({"value": {"nested": ["ok", "bad\x00"]}}, "NUL"),
            ({"value": {"x": math.inf}}, "NaN or infinite"),
            ({"expires_at": datetime(2030, 1, 1)}, "timezone"),  # noqa: DTZ001 - a naive datetime is the bad input
            ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "in the future"),
            ({"ttl": 0}, "ttl"),
            ({"ttl": -5}, "ttl"),
            ({"ttl": 60, "expires_at": datetime(2030, 1, 1, tzinfo=UTC)}, "not both"),
            ({"memory_type": "critical", "ttl": 60}, "critical memories never expire"),
            ({"user_id": "not-a-uuid"}, "user_id"),
        ],
    )
    async def test_bad_input_is_rejected_and_nothing_is_written(
        self,
        db: Database,
        users: UserManager,
        memories: MemoryManager,
        arguments: dict[str, Any],
        complaint: str,
    ) -> None:
        user = await create_user(users)
        call: dict[str, Any] = {
            "user_id": user.user_id,
            "key": "k",
            "value": "v",
            "memory_type": "short_term",
            "importance_score": 0.5,
        } | arguments
        with pytest.raises(ValidationError, match=complaint):
            await memories.store_memory(**call)
        assert await count_rows(db, "memory_entries") == 0
        assert await count_rows(db, "audit_log") == 1  # the user's creation only

    async def test_unknown_user_is_not_found_and_nothing_is_written(
        self, db: Database, memories: MemoryManager
    ) -> None:
        with pytest.raises(NotFoundError, match="does not exist"):
            await memories.store_memory(uuid.uuid4(), "k", "v", "short_term", 0.5)
        assert await count_rows(db, "memory_entries") == 0
        assert await count_rows(db, "audit_log") == 0


class TestGetMemory:
    async def test_missing_key_is_none(self, users: UserManager, memories: MemoryManager) -> None:
        user = await create_user(users)
        assert await memories.get_memory(user.user_id, "nothing") is None

    async def test_each_read_counts_one_access(self, users: UserManager, memories: MemoryManager) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR", "long_term", 0.5)
        for expected in (1, 2, 3):
            entry = await memories.get_memory(user.user_id, "base")
            assert entry is not None
            assert entry.access_count == expected
            assert entry.last_accessed_at is not None

    async def test_concurrent_reads_count_exactly(self, users: UserManager, memories: MemoryManager) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR", "long_term", 0.5)
        await asyncio.gather(*(memories.get_memory(user.user_id, "base") for _ in range(40)))
        entry = await memories.get_memory(user.user_id, "base")
        assert entry is not None
        assert entry.access_count == 41

    async def test_an_expired_memory_is_never_returned_even_before_the_purge(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "old", "x", "short_term", 0.5, ttl=60)
        await memories.store_memory(user.user_id, "fresh", "y", "short_term", 0.5, ttl=3600)
        clock.advance(minutes=2)
        assert await memories.get_memory(user.user_id, "old") is None
        assert await memories.get_memory(user.user_id, "fresh") is not None
        assert [entry.key for entry in (await memories.list_memories(user.user_id)).items] == ["fresh"]
        assert await count_rows(db, "memory_entries") == 2, "still stored until the purge"

    async def test_another_users_memory_is_invisible(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        owner = await create_user(users)
        other = await create_user(users)
        await memories.store_memory(owner.user_id, "base", "SBGR", "long_term", 0.5)
        assert await memories.get_memory(other.user_id, "base") is None

    async def test_sql_in_the_key_is_just_text(self, users: UserManager, memories: MemoryManager) -> None:
        user = await create_user(users)
        key = "x' OR '1'='1'; DROP TABLE memory_entries; --"
        await memories.store_memory(user.user_id, key, "ok", "short_term", 0.5)
        entry = await memories.get_memory(user.user_id, key)
        assert entry is not None
        assert entry.key == key
        assert await memories.get_memory(user.user_id, "x") is None


class TestListMemories:
    async def test_pages_in_key_order_and_filters_by_type(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        for index in range(7):
            tier = "critical" if index % 3 == 0 else "long_term"
            await memories.store_memory(user.user_id, f"k{index}", index, tier, 0.5)

        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = await memories.list_memories(user.user_id, limit=3, cursor=cursor)
            seen += [entry.key for entry in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [f"k{index}" for index in range(7)]

        critical = await memories.list_memories(user.user_id, "critical")
        assert [entry.key for entry in critical.items] == ["k0", "k3", "k6"]

    async def test_listing_does_not_count_accesses(self, users: UserManager, memories: MemoryManager) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "k", "v", "short_term", 0.5)
        await memories.list_memories(user.user_id)
        assert (await memories.list_memories(user.user_id)).items[0].access_count == 0

    @pytest.mark.parametrize(
        "arguments", [{"limit": 0}, {"limit": 501}, {"cursor": "garbage"}, {"memory_type": "eternal"}]
    )
    async def test_bad_arguments(
        self, users: UserManager, memories: MemoryManager, arguments: dict[str, Any]
    ) -> None:
        user = await create_user(users)
        with pytest.raises(ValidationError):
            await memories.list_memories(user.user_id, **arguments)


class TestDeleteMemory:
    async def test_deletes_and_audits_what_was_deleted(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        entry = await memories.store_memory(user.user_id, "base", "SBGR", "long_term", 0.5)
        assert await memories.delete_memory(user.user_id, "base") is True
        assert await memories.get_memory(user.user_id, "base") is None
        assert await count_rows(db, "memory_entries") == 0
        deletion = (await _audit_of(db, entry.memory_id))[0]
        assert deletion.action == "delete"
        assert deletion.old_values["value"] == "SBGR"

    async def test_deleting_a_missing_key_is_false_and_writes_nothing(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        assert await memories.delete_memory(user.user_id, "ghost") is False
        assert await count_rows(db, "audit_log") == 1

    async def test_cannot_delete_another_users_memory(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        owner = await create_user(users)
        other = await create_user(users)
        await memories.store_memory(owner.user_id, "base", "SBGR", "long_term", 0.5)
        assert await memories.delete_memory(other.user_id, "base") is False
        assert await memories.get_memory(owner.user_id, "base") is not None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.text(
        st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=200
    ),
    text=st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=300),
)
async def test_any_text_without_nul_round_trips(
    users: UserManager, memories: MemoryManager, key: str, text: str
) -> None:
    user = await create_user(users)
    await memories.store_memory(user.user_id, key, {"texto": text}, "short_term", 0.5)
    entry = await memories.get_memory(user.user_id, key)
    assert entry is not None
    assert (entry.key, entry.value) == (key, {"texto": text})


@pytest.mark.parametrize("bad_id", ["42", "'; DROP TABLE memory_entries; --", "", "\x00"])
@pytest.mark.parametrize("call", ["store_memory", "get_memory", "delete_memory", "list_memories"])
async def test_a_non_uuid_user_id_is_refused_everywhere(
    db: Database, users: UserManager, memories: MemoryManager, call: str, bad_id: str
) -> None:
    user = await create_user(users)
    await memories.store_memory(user.user_id, "k", "v", "long_term")
    calls: dict[str, dict[str, Any]] = {
        "store_memory": {"user_id": bad_id, "key": "k2", "value": "v"},
        "get_memory": {"user_id": bad_id, "key": "k"},
        "delete_memory": {"user_id": bad_id, "key": "k"},
        "list_memories": {"user_id": bad_id},
    }
    arguments = calls[call]
    with pytest.raises(ValidationError, match="user_id"):
        await getattr(memories, call)(**arguments)
    assert await count_rows(db, "memory_entries") == 1
    assert await count_rows(db, "audit_log") == 2
