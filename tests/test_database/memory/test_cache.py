"""The get_memory cache: hits, exact access counts, expiry, invalidation by every write path, bounds, and coherence
between two database handles (two processes) on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from stratus_db import Database, MemoryManager, UserManager
from stratus_db.errors import ValidationError
from stratus_db.memory.cache import MemoryCache
from stratus_db.models import MemoryRow
from tests.fixtures.clock import ManualClock
from tests.fixtures.databases import handles_on
from tests.fixtures.factories import create_user


def _stats(db: Database) -> dict[str, Any]:
    stats: dict[str, Any] = db.metrics()["memory_cache"]
    return stats


async def _stored_access_count(db: Database, key: str) -> int:
    async with db.transaction(read_only=True) as conn:
        return int(
            (await conn.execute(select(MemoryRow.access_count).where(MemoryRow.key == key))).scalar_one()
        )


@pytest.fixture
async def second_handle(db: Database) -> AsyncIterator[Callable[..., Database]]:
    async for opener in handles_on(db):
        yield opener


@pytest.fixture
async def postgres_handles(postgresql_db: Database) -> AsyncIterator[Callable[..., Database]]:
    async for opener in handles_on(postgresql_db):
        yield opener


class TestHits:
    async def test_a_second_read_is_a_hit_and_still_counts(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
        before = _stats(db)
        first = await memories.get_memory(user.user_id, "base")
        second = await memories.get_memory(user.user_id, "base")
        assert first is not None
        assert second is not None
        assert (first.access_count, second.access_count) == (1, 2)
        assert second.last_accessed_at is not None
        assert first.last_accessed_at is not None
        assert second.last_accessed_at >= first.last_accessed_at
        counted = {"access_count", "last_accessed_at"}
        assert second.model_dump(exclude=counted) == first.model_dump(exclude=counted)
        after = _stats(db)
        assert after["hits"] == before["hits"] + 1
        assert after["misses"] == before["misses"] + 1

    async def test_hit_counts_reach_the_database_exactly(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
        await asyncio.gather(*(memories.get_memory(user.user_id, "base") for _ in range(25)))
        for _ in range(25):
            await memories.get_memory(user.user_id, "base")
        await MemoryCache.of(db).flush()
        assert await _stored_access_count(db, "base") == 50

    async def test_close_writes_the_counts_still_buffered(
        self, db: Database, second_handle: Callable[..., Database]
    ) -> None:
        handle = second_handle(STRATUS_MEMORY_CACHE_FLUSH_INTERVAL_S=60)
        user = await create_user(UserManager(handle))
        memories = MemoryManager(handle)
        await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
        for _ in range(7):
            await memories.get_memory(user.user_id, "base")
        assert await _stored_access_count(db, "base") == 1, "one miss written, six hits buffered"
        await handle.close()
        assert await _stored_access_count(db, "base") == 7

    async def test_a_cached_key_still_refuses_malformed_arguments_and_serves_its_text_form(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
        assert await memories.get_memory(user.user_id, "base") is not None  # cached from now on
        malformed: list[tuple[Any, Any]] = [
            (user.user_id, "base\x00"),
            (user.user_id, ""),
            (user.user_id, "b" * 201),
            (str(user.user_id) + "0", "base"),
            (None, "base"),
            (user.user_id, None),
        ]
        for user_id, key in malformed:
            with pytest.raises(ValidationError):
                await memories.get_memory(user_id, key)
        before = _stats(db)
        entry = await memories.get_memory(str(user.user_id), "base")
        assert entry is not None
        assert entry.access_count == 2
        assert _stats(db)["hits"] == before["hits"] + 1
        await MemoryCache.of(db).flush()
        assert await _stored_access_count(db, "base") == 2

    async def test_an_expired_cached_memory_is_not_returned(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "metar", "SBGR 33008KT", "medium_term", ttl=60)
        assert await memories.get_memory(user.user_id, "metar") is not None
        assert await memories.get_memory(user.user_id, "metar") is not None  # cached
        clock.advance(minutes=2)
        assert await memories.get_memory(user.user_id, "metar") is None


class TestInvalidation:
    async def test_every_write_path_invalidates(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "k", "v1", "long_term", 0.1)
        await memories.get_memory(user.user_id, "k")

        await memories.store_memory(user.user_id, "k", "v2")
        read = await memories.get_memory(user.user_id, "k")
        assert read is not None
        assert read.value == "v2"

        await memories.delete_memory(user.user_id, "k")
        assert await memories.get_memory(user.user_id, "k") is None

        await memories.store_memory(user.user_id, "soon", "x", "medium_term", 0.1, ttl=60)
        await memories.get_memory(user.user_id, "soon")
        clock.advance(minutes=2)
        assert await memories.purge_expired() == 1
        assert await memories.get_memory(user.user_id, "soon") is None

    async def test_promotion_is_seen_by_the_next_read(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR", "short_term", 0.9)
        tiers = []
        for _ in range(4):
            read = await memories.get_memory(user.user_id, "base")
            assert read is not None
            tiers.append(read.memory_type.value)
        assert tiers == ["short_term", "short_term", "medium_term", "medium_term"]

    async def test_eviction_invalidates(self, db: Database, second_handle: Callable[..., Database]) -> None:
        handle = second_handle(STRATUS_MEMORY_MAX_PER_USER=1)
        memories = MemoryManager(handle)
        user = await create_user(UserManager(handle))
        await memories.store_memory(user.user_id, "old", "x", "long_term", 0.0)
        await memories.get_memory(user.user_id, "old")
        await memories.store_memory(user.user_id, "new", "y", "long_term", 0.9)
        assert await memories.get_memory(user.user_id, "old") is None

    async def test_a_rolled_back_write_leaves_the_cache_right(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "k", "kept", "long_term")

        async def change_then_fail() -> None:
            async with db.transaction() as tx:
                await memories.store_memory(user.user_id, "k", "discarded", tx=tx)
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await change_then_fail()
        for _ in range(2):
            read = await memories.get_memory(user.user_id, "k")
            assert read is not None
            assert read.value == "kept"


class TestBounds:
    async def test_the_least_recently_used_entries_leave_first(
        self, second_handle: Callable[..., Database]
    ) -> None:
        handle = second_handle(STRATUS_MEMORY_CACHE_MAX_ENTRIES=2)
        memories = MemoryManager(handle)
        user = await create_user(UserManager(handle))
        for key in ("a", "b", "c"):
            await memories.store_memory(user.user_id, key, key, "long_term")
            await memories.get_memory(user.user_id, key)
        stats = _stats(handle)
        assert (stats["entries"], stats["evictions"]) == (2, 1)
        await memories.get_memory(user.user_id, "a")  # evicted: a miss
        assert _stats(handle)["misses"] == stats["misses"] + 1

    async def test_the_byte_bound_holds(self, second_handle: Callable[..., Database]) -> None:
        handle = second_handle(STRATUS_MEMORY_CACHE_MAX_BYTES=20_000)
        memories = MemoryManager(handle)
        user = await create_user(UserManager(handle))
        for index in range(5):
            await memories.store_memory(user.user_id, f"k{index}", "x" * 6_000, "long_term")
            await memories.get_memory(user.user_id, f"k{index}")
        stats = _stats(handle)
        assert 0 < stats["bytes"] <= 20_000
        assert stats["entries"] < 5

    async def test_a_disabled_cache_reads_the_database_every_time(
        self, db: Database, second_handle: Callable[..., Database]
    ) -> None:
        handle = second_handle(STRATUS_MEMORY_CACHE_MAX_ENTRIES=0)
        memories = MemoryManager(handle)
        user = await create_user(UserManager(handle))
        await memories.store_memory(user.user_id, "k", "v", "long_term")
        for _ in range(3):
            await memories.get_memory(user.user_id, "k")
        assert await _stored_access_count(db, "k") == 3
        assert _stats(handle)["entries"] == 0


async def test_a_write_in_one_handle_reaches_the_others_cache(
    postgres_handles: Callable[..., Database],
) -> None:
    writer_db, reader_db = postgres_handles(), postgres_handles()
    writer, reader = MemoryManager(writer_db), MemoryManager(reader_db)
    user = await create_user(UserManager(writer_db))
    await writer.store_memory(user.user_id, "base", "SBGR", "long_term")
    for _ in range(2):
        read = await reader.get_memory(user.user_id, "base")
        assert read is not None
        assert read.value == "SBGR"
    assert _stats(reader_db)["hits"] == 1

    await writer.store_memory(user.user_id, "base", "SBKP")
    changed = time.perf_counter()
    deadline = changed + 5  # a hang guard, not a performance bound (the test prints nothing about speed)
    value = None
    while value != "SBKP" and time.perf_counter() < deadline:
        await asyncio.sleep(0.005)
        read = await reader.get_memory(user.user_id, "base")
        value = None if read is None else read.value
    assert value == "SBKP"


async def test_counts_from_two_handles_add_up_exactly(
    postgresql_db: Database, postgres_handles: Callable[..., Database]
) -> None:
    first, second = postgres_handles(), postgres_handles()
    user = await create_user(UserManager(first))
    await MemoryManager(first).store_memory(user.user_id, "base", "SBGR", "long_term")

    async def read_many(handle: Database) -> None:
        memories = MemoryManager(handle)
        for _ in range(30):
            await memories.get_memory(user.user_id, "base")

    await asyncio.gather(read_many(first), read_many(second))
    await first.close()
    await second.close()
    assert await _stored_access_count(postgresql_db, "base") == 60


async def test_losing_the_listen_connection_empties_the_cache_until_it_is_back(
    postgresql_db: Database, postgres_handles: Callable[..., Database]
) -> None:
    handle = postgres_handles()
    memories = MemoryManager(handle)
    user = await create_user(UserManager(handle))
    await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
    await memories.get_memory(user.user_id, "base")
    assert _stats(handle)["entries"] == 1
    async with postgresql_db.engine.connect() as admin:
        await admin.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        )
    deadline = time.perf_counter() + 5
    while _stats(handle)["entries"] and time.perf_counter() < deadline:  # noqa: ASYNC110 - the listener's own timing
        await asyncio.sleep(0.01)
    assert _stats(handle)["entries"] == 0
    while not _stats(handle)["listening"] and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    assert _stats(handle)["listening"]


async def test_a_writer_without_a_cache_still_invalidates_the_others(
    postgres_handles: Callable[..., Database],
) -> None:
    writer_db, reader_db = postgres_handles(STRATUS_MEMORY_CACHE_MAX_ENTRIES=0), postgres_handles()
    writer, reader = MemoryManager(writer_db), MemoryManager(reader_db)
    user = await create_user(UserManager(writer_db))
    await writer.store_memory(user.user_id, "base", "SBGR", "long_term")
    await writer.store_memory(user.user_id, "rota", "SBKP-SBRP", "long_term")
    for key in ("base", "base", "rota", "rota"):
        await reader.get_memory(user.user_id, key)
    assert _stats(reader_db)["hits"] == 2

    await writer.store_memory(user.user_id, "base", "SBKP")
    await writer.delete_memory(user.user_id, "rota")
    deadline = time.perf_counter() + 5  # a hang guard, not a performance bound
    while _stats(reader_db)["entries"] and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    read = await reader.get_memory(user.user_id, "base")
    assert read is not None
    assert read.value == "SBKP"
    assert await reader.get_memory(user.user_id, "rota") is None


async def test_an_expired_key_stored_again_does_not_inherit_buffered_counts(
    db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
) -> None:
    user = await create_user(users)
    first = await memories.store_memory(user.user_id, "metar", "SBGR", "long_term", ttl=60)
    for _ in range(3):
        await memories.get_memory(user.user_id, "metar")  # one miss, two buffered hits
    clock.advance(minutes=2)
    fresh = await memories.store_memory(user.user_id, "metar", "SBKP", "long_term")
    assert fresh.memory_id != first.memory_id
    await MemoryCache.of(db).flush()
    assert await _stored_access_count(db, "metar") == 0
    assert await memories.delete_memory(user.user_id, "metar") is True


async def test_deleting_an_expired_memory_finds_nothing(
    users: UserManager, memories: MemoryManager, clock: ManualClock
) -> None:
    user = await create_user(users)
    await memories.store_memory(user.user_id, "metar", "SBGR", "long_term", ttl=60)
    clock.advance(minutes=2)
    assert await memories.delete_memory(user.user_id, "metar") is False


async def _wait_until_forgotten(handle: Database, user_id: uuid.UUID, key: str) -> None:
    deadline = time.perf_counter() + 5  # a hang guard, not a performance bound
    while (user_id, key) in MemoryCache.of(handle) and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


async def test_promotion_purge_and_eviction_in_one_handle_reach_the_others_cache(
    postgres_handles: Callable[..., Database],
) -> None:
    later = ManualClock()
    writer_db = postgres_handles(clock=later, STRATUS_MEMORY_MAX_PER_USER=2)
    reader_db = postgres_handles()
    writer, reader = MemoryManager(writer_db), MemoryManager(reader_db)
    user = await create_user(UserManager(writer_db))
    await writer.store_memory(user.user_id, "promoted", "SBGR", "short_term", 0.9)
    await writer.store_memory(user.user_id, "purged", "SBKP", "medium_term", 0.9, ttl=3600)
    for key in ("promoted", "purged", "promoted", "purged"):
        await reader.get_memory(user.user_id, key)

    for _ in range(2):  # with the reader's two reads, the third read promotes
        await writer.get_memory(user.user_id, "promoted")
    await _wait_until_forgotten(reader_db, user.user_id, "promoted")
    read = await reader.get_memory(user.user_id, "promoted")
    assert read is not None
    assert read.memory_type == "medium_term"

    later.advance(hours=2)
    assert await writer.purge_expired() == 1
    await _wait_until_forgotten(reader_db, user.user_id, "purged")
    assert await reader.get_memory(user.user_id, "purged") is None

    await writer.store_memory(user.user_id, "trivial", "x", "long_term", 0.0)
    for _ in range(2):
        await reader.get_memory(user.user_id, "trivial")
    await writer.store_memory(user.user_id, "newest", "y", "long_term", 0.9)  # over the cap: evicts "trivial"
    await _wait_until_forgotten(reader_db, user.user_id, "trivial")
    assert await reader.get_memory(user.user_id, "trivial") is None


@pytest.fixture
async def sqlite_handles(sqlite_db: Database) -> AsyncIterator[Callable[..., Database]]:
    async for opener in handles_on(sqlite_db):
        yield opener


async def test_two_handles_on_one_sqlite_file_never_serve_what_the_other_changed(
    sqlite_handles: Callable[..., Database],
) -> None:
    """Two processes on the embedded file: the next read after the other's write sees it, with no delay at all."""
    writer_db, reader_db = sqlite_handles(), sqlite_handles()
    writer, reader = MemoryManager(writer_db), MemoryManager(reader_db)
    user = await create_user(UserManager(writer_db))
    for key, value in (("changed", "SBGR"), ("deleted", "SBKP"), ("expiring", "SBRP")):
        await writer.store_memory(user.user_id, key, value, "long_term")
        for _ in range(2):
            await reader.get_memory(user.user_id, key)
    assert _stats(reader_db)["hits"] == 3, "the reader serves all three from its cache"

    await writer.store_memory(user.user_id, "changed", "SBSP")
    changed = await reader.get_memory(user.user_id, "changed")
    assert changed is not None
    assert changed.value == "SBSP"

    assert await writer.delete_memory(user.user_id, "deleted") is True
    assert await reader.get_memory(user.user_id, "deleted") is None

    soon = reader_db.clock() + timedelta(minutes=1)
    await writer.store_memory(user.user_id, "expiring", "SBRP", expires_at=soon)
    reader_db.clock.advance(minutes=2)  # type: ignore[attr-defined]
    assert await reader.get_memory(user.user_id, "expiring") is None

    hits = _stats(reader_db)["hits"]
    for _ in range(2):  # the other's writes emptied the cache: a miss, then (nothing changed since) a hit
        again = await reader.get_memory(user.user_id, "changed")
        assert again is not None
        assert again.value == "SBSP"
    assert _stats(reader_db)["hits"] == hits + 1


async def test_a_task_reading_only_cached_memories_lets_the_others_run(
    db: Database, users: UserManager, second_handle: Callable[..., Database]
) -> None:
    """A hit awaits no I/O: a loop of hits alone must still give the event loop (and the count flush) turns."""
    handle = second_handle(STRATUS_MEMORY_CACHE_FLUSH_INTERVAL_S=0.001)
    memories = MemoryManager(handle)
    user = await create_user(users)
    await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
    await memories.get_memory(user.user_id, "base")
    reads = 5000
    other_turns = 0
    reading = True

    async def other_task() -> None:
        nonlocal other_turns
        while reading:
            other_turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    await asyncio.sleep(0)  # the other task starts
    turns_before = other_turns
    for _ in range(reads):
        await memories.get_memory(user.user_id, "base")
    pending_after_the_loop = _stats(handle)["pending_access_counts"]
    turns_during = other_turns - turns_before
    reading = False
    await other
    assert turns_during > 0, "the other task never ran while the hits went on"
    assert pending_after_the_loop < reads, "no access count was written while the hits went on"
    await handle.close()
    assert await _stored_access_count(db, "base") == reads + 1


async def test_a_write_rolled_back_in_a_savepoint_does_not_blind_the_sqlite_cache(
    sqlite_handles: Callable[..., Database],
) -> None:
    """The reader's own write, rolled back inside a transaction that commits, must not make it expect the stamp that
    the other process writes next."""
    reader_db, writer_db = sqlite_handles(), sqlite_handles()
    reader, writer = MemoryManager(reader_db), MemoryManager(writer_db)
    user = await create_user(UserManager(writer_db))
    await writer.store_memory(user.user_id, "base", "SBGR", "long_term")
    for _ in range(2):
        await reader.get_memory(user.user_id, "base")
    assert _stats(reader_db)["hits"] == 1
    async with reader_db.transaction() as tx:
        savepoint = await tx.begin_nested()
        await reader.store_memory(user.user_id, "other", "rolled back", tx=tx)
        await savepoint.rollback()
    await writer.store_memory(user.user_id, "base", "SBKP")
    read = await reader.get_memory(user.user_id, "base")
    assert read is not None
    assert read.value == "SBKP"
