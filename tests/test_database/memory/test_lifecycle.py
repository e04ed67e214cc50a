"""Tiers and lifetimes, sliding expiry, promotion, the per-user cap and the purge of expired memories."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from stratus_db import AuditManager, Database, MemoryManager, UserManager, ValidationError
from stratus_db.models import MemoryRow
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user


def _manager_with(db: Database, monkeypatch: pytest.MonkeyPatch, **settings: object) -> MemoryManager:
    """A MemoryManager whose policy comes from settings changed for this test only."""
    monkeypatch.setattr(db, "settings", db.settings.model_copy(update=settings))
    return MemoryManager(db)


class TestTiersAndLifetimes:
    async def test_each_tier_gets_its_default_lifetime(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        now = clock.now
        stored = {
            tier: await memories.store_memory(user.user_id, tier, "v", tier, 0.5)
            for tier in ("short_term", "medium_term", "long_term", "critical")
        }
        assert stored["short_term"].expires_at == now + timedelta(hours=24)
        assert stored["medium_term"].expires_at == now + timedelta(days=30)
        assert stored["long_term"].expires_at is None
        assert stored["critical"].expires_at is None

    async def test_ttl_and_expires_at_override_the_default(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        by_ttl = await memories.store_memory(user.user_id, "a", "v", "short_term", 0.5, ttl=90)
        by_timedelta = await memories.store_memory(
            user.user_id, "b", "v", "long_term", 0.5, ttl=timedelta(days=2)
        )
        at = clock.now + timedelta(days=400)
        by_instant = await memories.store_memory(user.user_id, "c", "v", "medium_term", 0.5, expires_at=at)
        assert by_ttl.expires_at == clock.now + timedelta(seconds=90)
        assert by_timedelta.expires_at == clock.now + timedelta(days=2)
        assert by_instant.expires_at == at

    async def test_storing_again_renews_the_lifetime(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "metar", "SBGR 33008KT", "short_term", 0.5)
        clock.advance(hours=20)
        renewed = await memories.store_memory(user.user_id, "metar", "SBGR 33008KT", "short_term", 0.5)
        assert renewed.expires_at == clock.now + timedelta(hours=24)
        clock.advance(hours=20)
        assert await memories.get_memory(user.user_id, "metar") is not None

    async def test_an_expired_key_stored_again_starts_a_new_memory(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        first = await memories.store_memory(user.user_id, "k", "old", "short_term", 0.5, ttl=60)
        await memories.get_memory(user.user_id, "k")
        clock.advance(minutes=5)
        second = await memories.store_memory(user.user_id, "k", "new", "short_term", 0.5)
        assert (second.value, second.access_count, second.last_accessed_at) == ("new", 0, None)
        assert second.created_at == clock.now > first.created_at
        assert await count_rows(db, "memory_entries") == 1
        event = (await AuditManager(db).query(record_id=second.memory_id, limit=1)).items[0]
        assert (event.action, event.old_values["value"], event.new_values["value"]) == (
            "create",
            "old",
            "new",
        )

    async def test_critical_memories_outlive_everything(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "cma_validade", "2027-03-01", "critical", 1.0)
        clock.advance(days=3650)
        assert await memories.purge_expired() == 0
        assert await memories.get_memory(user.user_id, "cma_validade") is not None


class TestSlidingExpiry:
    async def test_reads_push_the_expiry_of_sliding_tiers_only(
        self, db: Database, users: UserManager, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        memories = _manager_with(db, monkeypatch, STRATUS_MEMORY_SLIDING_TIERS=frozenset({"short_term"}))
        user = await create_user(users)
        await memories.store_memory(user.user_id, "slides", "v", "short_term", 0.1)
        await memories.store_memory(user.user_id, "fixed", "v", "medium_term", 0.1, ttl=timedelta(hours=24))
        for _ in range(2):  # two reads, 20 h apart: without sliding, both would be gone by the end
            clock.advance(hours=20)
            read = await memories.get_memory(user.user_id, "slides")
            assert read is not None
            assert read.expires_at == clock.now + timedelta(hours=24)
        assert await memories.get_memory(user.user_id, "fixed") is None

    async def test_a_read_never_shortens_a_longer_expiry(
        self, db: Database, users: UserManager, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        memories = _manager_with(db, monkeypatch, STRATUS_MEMORY_SLIDING_TIERS=frozenset({"short_term"}))
        user = await create_user(users)
        far = clock.now + timedelta(days=10)
        await memories.store_memory(user.user_id, "k", "v", "short_term", 0.1, expires_at=far)
        read = await memories.get_memory(user.user_id, "k")
        assert read is not None
        assert read.expires_at == far


class TestPromotion:
    async def test_memories_in_use_climb_the_tiers_and_each_step_is_audited(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        stored = await memories.store_memory(user.user_id, "base", "SBGR", "short_term", 0.6)
        tiers = []
        for _ in range(10):
            read = await memories.get_memory(user.user_id, "base")
            assert read is not None
            tiers.append(read.memory_type.value)
        # Defaults: 3 reads promote short → medium, 10 reads promote medium → long.
        assert tiers == ["short_term"] * 2 + ["medium_term"] * 7 + ["long_term"]
        final = await memories.get_memory(user.user_id, "base")
        assert final is not None
        assert final.expires_at is None, "long_term memories do not expire"
        events = (await AuditManager(db).query(record_id=stored.memory_id, action="promote")).items
        assert [(e.old_values["memory_type"], e.new_values["memory_type"]) for e in reversed(events)] == [
            ("short_term", "medium_term"),
            ("medium_term", "long_term"),
        ]

    async def test_unimportant_memories_are_not_promoted(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "trivia", "x", "short_term", 0.1)
        for _ in range(12):
            read = await memories.get_memory(user.user_id, "trivia")
        assert read is not None
        assert read.memory_type == "short_term"

    async def test_concurrent_reads_promote_once(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        stored = await memories.store_memory(user.user_id, "base", "SBGR", "short_term", 0.9)
        await asyncio.gather(*(memories.get_memory(user.user_id, "base") for _ in range(6)))
        events = (await AuditManager(db).query(record_id=stored.memory_id, action="promote")).items
        assert [e.new_values["memory_type"] for e in events] == ["medium_term"]


class TestPerUserCap:
    async def test_the_least_valuable_non_critical_memory_is_evicted_and_audited(
        self, db: Database, users: UserManager, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        memories = _manager_with(db, monkeypatch, STRATUS_MEMORY_MAX_PER_USER=3)
        user = await create_user(users)
        other = await create_user(users)
        await memories.store_memory(user.user_id, "critical_1", "x", "critical", 0.0)
        await memories.store_memory(user.user_id, "useful", "x", "long_term", 0.9)
        await memories.store_memory(user.user_id, "trivial", "x", "long_term", 0.1)
        await memories.store_memory(user.user_id, "used", "x", "long_term", 0.1)
        for _ in range(5):
            await memories.get_memory(user.user_id, "used")
        await memories.store_memory(other.user_id, "theirs", "x", "long_term", 0.0)
        clock.advance(minutes=1)

        newest = await memories.store_memory(user.user_id, "newest", "x", "short_term", 0.0)

        remaining = [entry.key for entry in (await memories.list_memories(user.user_id)).items]
        assert remaining == ["critical_1", "newest", "used", "useful"]
        assert newest.key in remaining, "the memory just stored is never the one evicted"
        assert [e.key for e in (await memories.list_memories(other.user_id)).items] == ["theirs"]
        evictions = (await AuditManager(db).query(user_id=user.user_id, action="evict")).items
        assert [e.old_values["key"] for e in evictions] == ["trivial"]

    async def test_critical_memories_are_never_evicted_nor_counted(
        self, db: Database, users: UserManager, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        memories = _manager_with(db, monkeypatch, STRATUS_MEMORY_MAX_PER_USER=1)
        user = await create_user(users)
        for index in range(3):
            await memories.store_memory(user.user_id, f"critical_{index}", "x", "critical", 0.0)
        await memories.store_memory(user.user_id, "only", "x", "long_term", 0.5)
        await memories.store_memory(user.user_id, "replacement", "x", "long_term", 0.5)
        keys = [entry.key for entry in (await memories.list_memories(user.user_id)).items]
        assert keys == ["critical_0", "critical_1", "critical_2", "replacement"]


class TestPurgeExpired:
    async def test_purges_in_batches_and_audits_each_batch_per_user(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        alice = await create_user(users)
        bruno = await create_user(users)
        for index in range(5):
            await memories.store_memory(alice.user_id, f"a{index}", index, "short_term", 0.5, ttl=60)
        for index in range(2):
            await memories.store_memory(bruno.user_id, f"b{index}", index, "short_term", 0.5, ttl=60)
        await memories.store_memory(alice.user_id, "keeps", "x", "short_term", 0.5, ttl=3600)
        await memories.store_memory(alice.user_id, "forever", "x", "critical", 0.5)
        clock.advance(minutes=2)

        assert await memories.purge_expired(batch_size=3) == 7

        async with db.transaction(read_only=True) as conn:
            left = sorted((await conn.execute(select(MemoryRow.key))).scalars())
        assert left == ["forever", "keeps"]
        purges = (await AuditManager(db).query(action="purge", limit=50)).items
        assert sum(len(e.old_values["memory_ids"]) for e in purges) == 7
        assert all(len(e.old_values["memory_ids"]) <= 3 for e in purges), "one row per user per batch of 3"
        assert {e.user_id for e in purges} == {alice.user_id, bruno.user_id}
        assert await memories.purge_expired() == 0

    @pytest.mark.parametrize("batch_size", [0, -1, 10_001])
    async def test_a_bad_batch_size_is_refused(self, memories: MemoryManager, batch_size: int) -> None:
        with pytest.raises(ValidationError, match="1 to 10000"):
            await memories.purge_expired(batch_size=batch_size)

    async def test_reports_progress_after_each_batch_with_the_running_total(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        for index in range(7):
            await memories.store_memory(user.user_id, f"k{index}", index, "short_term", 0.5, ttl=60)
        clock.advance(minutes=2)
        totals: list[int] = []
        assert await memories.purge_expired(batch_size=3, on_progress=totals.append) == 7
        assert totals == [3, 6, 7]
        assert await memories.purge_expired(on_progress=totals.append) == 0
        assert totals == [3, 6, 7], "no batch deleted anything: no progress to report"

    async def test_a_progress_callback_that_is_not_a_function_is_refused_before_anything_is_deleted(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "gone", "x", "short_term", 0.5, ttl=60)
        clock.advance(minutes=2)
        with pytest.raises(ValidationError, match="on_progress must be a function"):
            await memories.purge_expired(on_progress=42)  # type: ignore[arg-type]
        assert await count_rows(db, "memory_entries") == 1


async def test_the_cap_holds_when_new_keys_arrive_together(
    db: Database, users: UserManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    memories = _manager_with(db, monkeypatch, STRATUS_MEMORY_MAX_PER_USER=5)
    user = await create_user(users)
    await asyncio.gather(*(memories.store_memory(user.user_id, f"k{n}", n, "long_term") for n in range(12)))
    assert len((await memories.list_memories(user.user_id)).items) == 5


async def test_a_memory_leaving_the_critical_tier_counts_towards_the_cap(
    db: Database, users: UserManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    memories = _manager_with(db, monkeypatch, STRATUS_MEMORY_MAX_PER_USER=1)
    user = await create_user(users)
    await memories.store_memory(user.user_id, "was_critical", "x", "critical", 0.9)
    await memories.store_memory(user.user_id, "ordinary", "y", "long_term", 0.1)
    await memories.store_memory(user.user_id, "was_critical", "x", "long_term", 0.9)
    assert [entry.key for entry in (await memories.list_memories(user.user_id)).items] == ["was_critical"]
