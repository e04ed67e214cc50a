"""The get_memory cache: bounded (entries and bytes), expiry-aware, coherent across processes, counting every hit.

Coherence. Every write path invalidates the key locally at once, again as its transaction commits, and — on
PostgreSQL — tells every other process through NOTIFY (delivered at commit), whether or not this process caches. A read that missed may only admit what it
read if no invalidation happened since it began (the epoch check), so a value read before a commit can never outlive
that commit's invalidation (and a cached read is an UPDATE, which waits for a writer's row lock). On PostgreSQL
nothing is admitted unless the LISTEN connection is up; the cache forgets everything when that connection is lost
and again when it is back. On SQLite, where no message can be sent, every write puts a new change stamp in the file
(kit/notify.py) and every lookup and admission first reads it, forgetting everything when another process wrote
one: several processes on one embedded file never serve each other's stale values.

Counting. A hit counts its access in memory (memory/access_counts.py); counts are written in batches every flush
interval, and on close().
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections import OrderedDict, deque
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from stratus_db.kit.notify import MAX_PAYLOAD_BYTES, Notifier, PostgresNotifier, SQLiteChangeStamp
from stratus_db.kit.samples import SampleKind
from stratus_db.memory.access_counts import AccessCounts, CacheKey
from stratus_db.memory.schemas import MemoryEntry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from stratus_db.database import StratusPostgreSQLIntegration

CHANNEL = "stratus_memory_cache"
SAMPLE_NAME = "memory"
ENTRY_OVERHEAD_BYTES = 400
"""Rough size of a cached MemoryEntry beyond its key and JSON value."""

RECENT_INVALIDATIONS = 4096
"""Invalidations remembered to judge whether a read that began earlier may still be cached."""


class MemoryCache:
    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        settings = db.settings
        self._db = db
        self.max_entries = settings.STRATUS_MEMORY_CACHE_MAX_ENTRIES
        self.max_bytes = settings.STRATUS_MEMORY_CACHE_MAX_BYTES
        self._entries: OrderedDict[CacheKey, tuple[MemoryEntry, int]] = OrderedDict()
        self._bytes = 0
        self._epoch = 0
        # Recent invalidations as (epoch, user or None for everyone, keys or None for all of them).
        self._recent: deque[tuple[int, uuid.UUID | None, frozenset[str] | None]] = deque(
            maxlen=RECENT_INVALIDATIONS
        )
        self.counts = AccessCounts(db)
        self._notifier: Notifier = (
            PostgresNotifier(
                settings.database_url,
                CHANNEL,
                log=db.log,
                connect_timeout_s=settings.STRATUS_CONNECT_TIMEOUT_S,
            )
            if db.backend == "postgresql"
            else SQLiteChangeStamp(str(settings.database_url.database))
        )
        self._started = False
        self._start_lock = asyncio.Lock()
        # Our own messages come back to us: they are recognized and skipped (we invalidated at commit already).
        self._origin = uuid.uuid4().hex
        self.hits = self.misses = self.evictions = self.invalidations = 0
        db.on_close(self.close)
        db.add_metrics_source("memory_cache", self.stats)

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> MemoryCache:
        """The cache of this database handle, shared by every MemoryManager built on it."""
        return db.extension("memory.cache", lambda: cls(db))

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    async def start(self) -> None:
        """Begin listening for other processes' invalidations (PostgreSQL); until then nothing is cached."""
        if self._started or not self.enabled:
            return
        async with self._start_lock:
            if not self._started:
                try:
                    await self._notifier.start(self._on_message, self.clear)
                except (
                    OSError,
                    TimeoutError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    sqlite3.Error,
                ) as exc:
                    # No listener, no caching: reads go to the database (which reports its own unavailability).
                    self._db.log.warning(
                        "memory cache cannot listen for invalidations", error=type(exc).__name__
                    )
                    return
                self._started = True

    async def ready(self) -> bool:
        """Whether the cache can be trusted to be coherent, starting it if it was not: off, or hearing the other
        processes' invalidations (its LISTEN connection up on PostgreSQL). While it cannot, reads go to the database:
        correct, but at the database's pace, which a readiness probe reports."""
        if not self.enabled:
            return True
        await self.start()
        return self._notifier.listening

    # -- reads ----------------------------------------------------------------------------------------------------

    def __contains__(self, key: CacheKey) -> bool:
        """Whether this process holds `(user_id, key)` (expired or not)."""
        return key in self._entries

    def epoch(self) -> int:
        """Take before reading the database; pass to admit()."""
        return self._epoch

    def lookup(self, key: CacheKey, now: datetime) -> MemoryEntry | None:
        """The cached live memory, or None (missing or expired: an expired one is dropped)."""
        self._notifier.poll()
        cached = self._entries.get(key)
        if cached is not None and cached[0].expires_at is not None and cached[0].expires_at <= now:
            self._drop(key)
            cached = None
        # The hit ratio of docs/metrics.md, across processes and over any range (kit/samples.py).
        self._db.samples.count(SampleKind.cache, SAMPLE_NAME, failed=cached is None)
        if cached is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return cached[0]

    def record_hit(self, key: CacheKey, entry: MemoryEntry, now: datetime) -> MemoryEntry:
        """Count one access of a cached memory: in the cached copy now, in the database at the next flush."""
        # Validating the typed fields again costs less than model_copy (2.3 µs against 3.6 µs a hit): pydantic-core
        # checks them in Rust, where model_copy copies three containers in Python.
        counted = MemoryEntry.model_validate(
            entry.__dict__ | {"access_count": entry.access_count + 1, "last_accessed_at": now}
        )
        size = self._entries[key][1]
        self._entries[key] = (counted, size)
        self.counts.add(key, entry.memory_id, entry.user_id, now)
        return counted

    def _invalidated_since(self, key: CacheKey, since_epoch: int) -> bool:
        if since_epoch == self._epoch:
            return False
        if not self._recent or self._recent[0][0] > since_epoch + 1:
            return True  # the log no longer reaches back that far: assume the worst
        user_id, name = key
        return any(
            (who is None or who == user_id) and (names is None or name in names)
            for epoch, who, names in self._recent
            if epoch > since_epoch
        )

    def admit(self, key: CacheKey, entry: MemoryEntry, since_epoch: int) -> None:
        """Cache what a read found, unless the key was invalidated since the read began or nobody listens."""
        self._notifier.poll()
        if not self.enabled or not self._notifier.listening or self._invalidated_since(key, since_epoch):
            return
        size = ENTRY_OVERHEAD_BYTES + len(key[1]) + len(json.dumps(entry.value, ensure_ascii=False))
        if size > self.max_bytes:
            return
        # The database's count lacks our buffered hits, and reads that raced may arrive out of order: the cached
        # count is never behind what this process has already counted.
        count = entry.access_count + self.counts.pending(key, entry.memory_id)
        current = self._entries.get(key)
        if current is not None and current[0].memory_id == entry.memory_id:
            count = max(count, current[0].access_count)
        if count != entry.access_count:
            entry = entry.model_copy(update={"access_count": count})
        self._drop(key)
        self._entries[key] = (entry, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1

    # -- invalidation ---------------------------------------------------------------------------------------------

    def invalidate(self, user_id: uuid.UUID, keys: list[str] | None = None) -> None:
        """Forget some keys of a user (all of them when `keys` is None), in this process only."""
        self._epoch += 1
        self._recent.append((self._epoch, user_id, None if keys is None else frozenset(keys)))
        self.invalidations += 1
        if keys is None:
            for key in [key for key in self._entries if key[0] == user_id]:
                self._drop(key)
        else:
            for name in keys:
                self._drop((user_id, name))

    async def invalidate_everywhere(
        self, tx: AsyncConnection, user_id: uuid.UUID, keys: list[str] | None = None
    ) -> None:
        """Invalidate now, again when `tx` commits, and in every other process (NOTIFY, delivered at commit)."""
        self.invalidate(user_id, keys)
        self._db.after_commit(tx, lambda: self.invalidate(user_id, keys))
        # Published even when this process caches nothing: the other processes may.
        await self._notifier.publish(tx, self.notification(user_id, keys))

    def notification(self, user_id: uuid.UUID, keys: list[str] | None) -> str:
        """The NOTIFY payload (on CHANNEL) that makes the other processes forget `keys` of the user (None: all)."""
        message = {"origin": self._origin, "user_id": str(user_id), "keys": keys}
        payload = json.dumps(message, ensure_ascii=False)
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            payload = json.dumps(message | {"keys": None})
        return payload

    def _on_message(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message["origin"] != self._origin:
                self.invalidate(uuid.UUID(message["user_id"]), message["keys"])
        except (ValueError, KeyError, TypeError):
            self.clear()  # a message we cannot read might have named anything

    def clear(self) -> None:
        self._epoch += 1
        self._recent.append((self._epoch, None, None))
        self._entries.clear()
        self._bytes = 0

    def _drop(self, key: CacheKey) -> None:
        cached = self._entries.pop(key, None)
        if cached is not None:
            self._bytes -= cached[1]

    async def flush(self) -> int:
        """Write the buffered access counts of hits now (see AccessCounts.flush)."""
        return await self.counts.flush()

    async def close(self) -> None:
        try:
            await self.counts.close()
        finally:
            await self._notifier.stop()
            self.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "entries": len(self._entries),
            "bytes": self._bytes,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
            "invalidations": self.invalidations,
            "pending_access_counts": self.counts.total,
            "listening": self._notifier.listening,
        }
