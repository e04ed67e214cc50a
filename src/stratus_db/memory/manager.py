"""MemoryManager: what the agents remember about each user, one value per key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import ValidationError
from stratus_db.kit.schemas import Page, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.statistics import analyze_after
from stratus_db.kit.text import query_terms
from stratus_db.kit.validation import check_callback, parse_enum, parse_uuid, validate_input
from stratus_db.memory.access_counts import CacheKey
from stratus_db.memory.cache import MemoryCache
from stratus_db.memory.dialect import memory_dialect_for
from stratus_db.memory.plans import TABLE, MemoryPlanner
from stratus_db.memory.policy import MemoryPolicy, frequency, recency, search_score, standing
from stratus_db.memory.repository import (
    MemoryRepository,
    read_and_count_on_its_own,
    reveal,
)
from stratus_db.memory.schemas import MemoryEntry, MemoryLookup, MemorySearch, MemoryStore, SearchResult
from stratus_db.memory.search import MemoryCandidate, SearchFilters
from stratus_db.memory.writes import MemoryWrites
from stratus_db.models import ConsentPurpose, MemoryType
from stratus_db.privacy.gate import ConsentCheck
from stratus_db.security.personal import PersonalData
from stratus_db.security.principal import Principal
from stratus_db.users.activity import tracker_of

if TYPE_CHECKING:
    from stratus_db.database import Operation, StratusPostgreSQLIntegration

PERSONALISATION = ConsentPurpose.memory_personalisation
"""What store_memory, get_memory and search_memories need consent to when STRATUS_CONSENT_REQUIRED names it."""
HITS_PER_TURN = 64
"""Cache hits served in a row before get_memory yields to the event loop (a turn costs about as much as a hit)."""


class MemoryManager:
    """Store, read, list and delete memories. Writes are audited; an expired memory is never returned.

    Every public method takes a keyword-only `principal`: who makes that call. Given, it is the call's principal,
    over the context's (`db.context(principal=...)`) if that names another: security/policy.py decides the call for
    it, and its audit rows record it as the actor. Omitted, the context's principal applies, and without one the
    STRATUS_ANONYMOUS_CALLS setting. A call refused raises PermissionDeniedError and writes only the refusal's audit
    row; a `principal` that is not a Principal raises ValidationError. docs/users.md, "Access control", has the rules.
    """

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._policy = MemoryPolicy.from_settings(db.settings)
        self._cache = MemoryCache.of(db)
        self._activity = tracker_of(db)
        self._dialect = memory_dialect_for(db, self._policy)
        self._writes = MemoryWrites(db, MemoryPlanner(self._policy), self._cache, self._dialect.coalescer)
        self._consent = ConsentCheck(db)
        # Tested once here: with the check off (the default), the hot paths pay one attribute read for it.
        self._personalisation = ConsentPurpose.memory_personalisation in self._consent.required

    async def store_memory(
        self,
        user_id: uuid.UUID | str,
        key: str,
        value: Any,
        memory_type: MemoryType | str | None = None,
        importance_score: float | None = None,
        *,
        ttl: timedelta | float | None = None,
        expires_at: datetime | None = None,
        sensitive: bool = False,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> MemoryEntry:
        """Store `value` under `key` for the user; an existing key is updated in place.

        A new memory is `short_term` with importance 0.5 unless told otherwise; on update, an argument left out keeps
        its current value. The memory expires after its tier's lifetime (configuration: 24 h short_term, 30 days
        medium_term, never for long_term and critical by default), counted from this call, unless `ttl` or
        `expires_at` says otherwise: storing again renews the lifetime. `access_count`, `created_at` and
        `last_accessed_at` survive updates; the audit row keeps the previous values. Storing exactly what is stored
        writes nothing. A key whose memory has expired starts afresh. A new key that takes the user past the per-user
        cap evicts the user's least valuable non-critical memories (never this one). Concurrent stores of the same new
        key are safe: one creates it, the others update it.

        Args:
            user_id: the owner.
            key: 1–200 characters, compared exactly.
            value: any JSON value (no NaN, no NUL characters).
            memory_type: short_term, medium_term, long_term or critical (never expires, never evicted).
            importance_score: from 0 to 1.
            ttl: lifetime from now, in seconds or as a timedelta (not for critical).
            expires_at: a time-zone-aware instant in the future (not for critical; not with ttl).
            sensitive: the value is personal data to protect (health, say): encrypted under the user's data key
                before it reaches the database, and the memory is left out of search_memories (docs/memory.md).
                A sensitive memory stays so: storing over it without sensitive=True is refused.
            tx: a transaction from `db.transaction()` to join.
            principal: who makes this call, instead of the context's principal (see the class docstring).

        Raises:
            ValidationError: a malformed argument, or a store without sensitive=True over a sensitive memory;
                nothing is written.
            NotFoundError: the user does not exist.
            ConsentRequiredError: STRATUS_CONSENT_REQUIRED names memory_personalisation and the user has not
                consented to it (docs/privacy.md); nothing is written.
        """
        async with self._db.operation("memory.store", principal=principal) as op:
            data = validate_input(
                MemoryStore,
                {
                    "user_id": user_id,
                    "key": key,
                    "value": value,
                    "memory_type": memory_type,
                    "importance_score": importance_score,
                    "ttl": ttl,
                    "expires_at": expires_at,
                    "sensitive": sensitive,
                },
            )
            if data.expires_at is not None and data.expires_at <= self._db.clock():
                raise ValidationError(
                    "expires_at must be in the future; to remove a memory, use delete_memory"
                )
            await op.authorize(data.user_id, tx=tx)
            if self._personalisation:
                await self._consent.require(data.user_id, PERSONALISATION, tx=tx, acting="store_memory")
            self._activity.note(data.user_id)
            stored = await self._writes.store(op, data, tx=tx)
            # The value as given, not its token: nothing above the store sees one.
            return stored.model_copy(update={"value": data.value}) if stored.sensitive else stored

    async def get_memory(
        self,
        user_id: uuid.UUID | str,
        key: str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> MemoryEntry | None:
        """The user's live memory under `key`, or None if missing or expired.

        A read counts one access (exactly, under concurrency), extends the expiry of sliding tiers, and promotes a
        memory that has been read often enough (short_term → medium_term → long_term; the rules are configured).
        Outside a caller's transaction, reads are served from the process's cache when they can be: a hit counts its
        access in memory and writes it within STRATUS_MEMORY_CACHE_FLUSH_INTERVAL_S (and on close()).

        Raises:
            ValidationError: `user_id` is not a UUID or `key` is malformed.
            ConsentRequiredError: STRATUS_CONSENT_REQUIRED names memory_personalisation and the user has not
                consented to it.
        """
        async with self._db.operation("memory.get", principal=principal) as op:
            use_cache = tx is None and self._cache.enabled
            cache_key = self._valid_lookup(user_id, key, use_cache)
            owner, name = cache_key
            await op.authorize(owner, tx=tx)
            if self._personalisation:
                await self._consent.require(owner, PERSONALISATION, tx=tx, acting="get_memory")
            self._activity.note(owner)
            if use_cache:
                await self._cache.start()
                now = self._db.clock()
                cached = self._cache.lookup(cache_key, now)
                if cached is not None:
                    if self._policy.promotion_for(
                        cached.memory_type, cached.access_count + 1, cached.importance_score
                    ):
                        # The promotion is decided on the database's count, which must first include our hits.
                        await self._cache.flush()
                    else:
                        if self._cache.hits % HITS_PER_TURN == 0:
                            # A hit awaits no I/O: a task reading only cached memories would otherwise never let
                            # the event loop run anything else, the access-count flush included.
                            await asyncio.sleep(0)
                        hit = self._cache.record_hit(cache_key, cached, now)
                        return await self._revealed(op, hit, tx) if hit.sensitive else hit
            epoch = self._cache.epoch()

            async def read(conn: AsyncConnection) -> MemoryEntry | None:
                now = self._db.clock()
                repository = MemoryRepository(conn, owner)
                return await repository.read_and_count(name, now, self._policy.sliding_expiries(now))

            # The read and its count are one statement; a promotion, when due, is a transaction of its own.
            if tx is None and self._dialect.reads_alone:
                entry = await read_and_count_on_its_own(op, owner, name, self._db.clock())
            else:
                entry = await op.run(read, tx=tx, single_statement=True)
            if entry is not None and self._policy.promotion_for(
                entry.memory_type, entry.access_count, entry.importance_score
            ):
                entry = await op.run(partial(self._writes.promote, read=entry), tx=tx)
            # A sliding tier's expiry moves with every read, so its reads must reach the database.
            if use_cache and entry is not None and entry.memory_type not in self._policy.sliding:
                self._cache.admit(cache_key, entry, epoch)
            return await self._revealed(op, entry, tx) if entry is not None and entry.sensitive else entry

    async def _revealed(self, op: Operation, entry: MemoryEntry, tx: AsyncConnection | None) -> MemoryEntry:
        """A sensitive memory with its value decrypted (the cache and the rows hold its token); the database is read
        only for a key this handle does not hold yet."""
        personal = PersonalData.of(self._db)
        data_key = personal.cached_key(entry.user_id)
        if data_key is not None:
            return entry.model_copy(
                update={"value": personal.open_memory_value(entry.value, entry.memory_id, data_key)}
            )

        async def work(conn: AsyncConnection) -> MemoryEntry:
            return (await reveal(PersonalData.of(self._db), conn, [entry]))[0]

        return await op.run(work, tx=tx)

    def _valid_lookup(self, user_id: object, key: object, use_cache: bool) -> CacheKey:
        """get_memory's arguments, validated: as `(user_id, key)`, the cache's key.

        A pair the cache holds was validated before it was admitted, and validation returns a UUID (asyncpg's too)
        and a str as they were given: such arguments are valid already, and a hit skips validating them again.
        """
        if (
            use_cache
            and isinstance(user_id, uuid.UUID)
            and type(key) is str
            and (user_id, key) in self._cache
        ):
            return user_id, key
        lookup = validate_input(MemoryLookup, {"user_id": user_id, "key": key})
        return lookup.user_id, lookup.key

    async def list_memories(
        self,
        user_id: uuid.UUID | str,
        memory_type: MemoryType | str | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> Page[MemoryEntry]:
        """The user's live memories in key order, optionally of one type. Does not count accesses.

        Raises:
            ValidationError: a malformed user id, type, limit or cursor.
        """
        async with self._db.operation("memory.list", read_only=True, principal=principal) as op:
            owner = parse_uuid(user_id, "user_id")
            type_filter = None if memory_type is None else parse_enum(MemoryType, memory_type, "memory_type")
            limit = check_limit(limit)
            after_key = None if cursor is None else decode_cursor(cursor, (str,))[0]
            await op.authorize(owner, tx=tx)

            async def work(conn: AsyncConnection) -> Page[MemoryEntry]:
                entries = await MemoryRepository(conn, owner).page(
                    memory_type=type_filter, after_key=after_key, limit=limit + 1, now=self._db.clock()
                )
                if any(entry.sensitive for entry in entries):
                    entries = await reveal(PersonalData.of(self._db), conn, entries)
                return make_page(entries, limit, lambda entry: encode_cursor(entry.key))

            return await op.run(work, tx=tx)

    async def delete_memory(
        self,
        user_id: uuid.UUID | str,
        key: str,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> bool:
        """Delete the user's memory under `key`; True if there was one. The audit row keeps what was deleted.

        Raises:
            ValidationError: `user_id` is not a UUID or `key` is malformed.
        """
        async with self._db.operation("memory.delete", principal=principal) as op:
            lookup = validate_input(MemoryLookup, {"user_id": user_id, "key": key})
            await op.authorize(lookup.user_id, tx=tx)
            return await op.run(partial(self._writes.delete, user_id=lookup.user_id, key=lookup.key), tx=tx)

    async def search_memories(
        self,
        user_id: uuid.UUID | str,
        query: str,
        limit: int = 10,
        memory_types: Sequence[MemoryType | str] | None = None,
        min_importance: float | None = None,
        *,
        tx: AsyncConnection | None = None,
        principal: Principal | None = None,
    ) -> list[SearchResult]:
        """The user's live memories most relevant to `query`, best first.

        Lexical relevance (accent-insensitive, stemmed Portuguese full text on key and value, plus trigram
        similarity for codes and typos) is blended with importance, recency and frequency:
        `score = 0.6 × lexical + 0.4 × (0.5 × importance + 0.3 × recency + 0.2 × frequency)`. Critical memories come
        first among equal scores. Searching does not count as access. Any text is a valid query: what is not a word
        is ignored, and a query with no words finds nothing.

        Raises:
            ValidationError: a malformed user id, limit (1–100), memory type or min_importance.
            ConsentRequiredError: STRATUS_CONSENT_REQUIRED names memory_personalisation and the user has not
                consented to it.
        """
        async with self._db.operation("memory.search", read_only=True, principal=principal) as op:
            data = validate_input(
                MemorySearch,
                {
                    "user_id": user_id,
                    "query": query,
                    "limit": limit,
                    "memory_types": None if memory_types is None else tuple(memory_types),
                    "min_importance": min_importance,
                },
            )
            await op.authorize(data.user_id, tx=tx)
            if self._personalisation:
                await self._consent.require(data.user_id, PERSONALISATION, tx=tx, acting="search_memories")
            terms = query_terms(data.query)
            if not terms:
                return []

            now = self._db.clock()
            filters = SearchFilters(data.user_id, data.memory_types, data.min_importance, now)
            candidates = await self._dialect.search.search(op, terms, filters, data.limit, tx=tx)
            return self._rank(candidates, now, data.limit)

    def _rank(self, candidates: list[MemoryCandidate], now: datetime, limit: int) -> list[SearchResult]:
        """Score every candidate, then build results for the best `limit` only (models cost more than scores).

        PostgreSQL's candidates are already those best `limit`, chosen by the same score in the statement; scoring
        them again here gives each result its components."""
        scored = []
        for candidate in candidates:
            lexical = min(max(float(candidate.lexical), 0.0), 1.0)
            recency_score = recency(
                candidate.last_accessed_at or candidate.updated_at, now, self._policy.recency_half_life
            )
            frequency_score = frequency(candidate.access_count)
            score = search_score(
                lexical, standing(candidate.importance_score, recency_score, frequency_score)
            )
            scored.append((score, lexical, recency_score, frequency_score, candidate))
        scored.sort(key=lambda item: (-item[0], item[4].memory_type != MemoryType.critical, item[4].key))
        return [
            SearchResult(
                memory=MemoryEntry.model_validate(candidate._asdict()),
                score=score,
                lexical=lexical,
                importance=candidate.importance_score,
                recency=recency_score,
                frequency=frequency_score,
            )
            for score, lexical, recency_score, frequency_score, candidate in scored[:limit]
        ]

    async def purge_expired(
        self,
        *,
        batch_size: int = 1000,
        on_progress: Callable[[int], object] | None = None,
        principal: Principal | None = None,
    ) -> int:
        """Delete every expired memory (critical ones never expire), in batches of `batch_size`, each in its own
        short transaction; returns how many were deleted. Each batch writes one audit row per user listing the ids.

        `on_progress(deleted_so_far)` is called after each batch that deleted something has committed, with the
        running total (a progress bar, a log line). If it raises, the purge stops there with its error; the batches
        already committed stay deleted.

        Raises:
            ValidationError: `batch_size` outside 1–10,000, or `on_progress` neither a function nor None.
        """
        async with self._db.operation("memory.purge_expired", principal=principal) as op:
            size = check_limit(batch_size, maximum=10_000, name="batch_size")
            check_callback(on_progress, "on_progress")
            await op.authorize(None)

            total = 0
            while (deleted := await op.run(partial(self._writes.purge_batch, size=size))) > 0:
                total += deleted
                if on_progress is not None:
                    on_progress(total)
                if deleted < size:
                    break
            await analyze_after(self._db, TABLE, total, tx=None)
            return total
