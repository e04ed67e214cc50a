"""The one executor of memory write plans (memory/plans.py), and its two ways to send them.

- **Core in a transaction** (SQLite, a caller's `tx`, and every store the batch hands back): the row under the key is
  locked, the plan made on it, and its row, its audit entry and the caches' invalidation written in that
  transaction, then the per-user cap when the plan meets it.
- **Batched on PostgreSQL** (memory/coalescing.py): outside a caller's transaction, concurrent stores are planned
  and written together in prepared statements on the pooled asyncpg connection.

Both make the same plan from the same row, so a store writes the same columns and the same audit row whichever way
it is sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.rows import AuditEntry, audit_context
from stratus_db.audit.schemas import AuditAction
from stratus_db.kit.ids import new_id
from stratus_db.memory.cache import MemoryCache
from stratus_db.memory.coalescing import PlanFor, StoreCoalescer
from stratus_db.memory.plans import (
    MemoryChange,
    MemoryPlanner,
    Seal,
    StorePlan,
    Unchanged,
    purge_audit,
    removal_audit,
)
from stratus_db.memory.repository import ExpiredMemoryRepository, MemoryRepository
from stratus_db.memory.schemas import MemoryEntry, MemoryStore
from stratus_db.models import MemoryType
from stratus_db.security.crypto import DataKey
from stratus_db.security.personal import PersonalData

if TYPE_CHECKING:
    from stratus_db.database import Operation, StratusPostgreSQLIntegration


async def _key_for_writing(personal: PersonalData, user_id: uuid.UUID, conn: AsyncConnection) -> DataKey:
    return await personal.key_for_writing(conn, user_id)


class MemoryWrites:
    """Stores, promotions, deletions and purges: each planned once, then sent."""

    def __init__(
        self,
        db: StratusPostgreSQLIntegration,
        planner: MemoryPlanner,
        cache: MemoryCache,
        batches: StoreCoalescer | None,
    ) -> None:
        self._db = db
        self._planner = planner
        self._cache = cache
        self._batches = batches

    async def store(self, op: Operation, data: MemoryStore, *, tx: AsyncConnection | None) -> MemoryEntry:
        """Store `data` (validated): batched when it can be, else in a transaction that locks the key. A sensitive
        value is encrypted under the owner's data key, for its row, before it is planned (never batched: it is
        rare, and the batch's statements write values they can compare)."""
        seal = None if not data.sensitive else await self._sealer(op, data.user_id, tx)
        # Taken now, in the caller's operation: a batch writes the audit row later, in a context of its own.
        plan_for = partial(self._planner.store, data, memory_id=new_id(), context=audit_context(), seal=seal)
        if tx is None and self._batches is not None and not data.sensitive:
            stored = await self._batches.store(data.user_id, data.key, plan_for, self._planner.policy)
            if stored is not None:
                return stored
        return await op.run(partial(self._store_locked, data.user_id, data.key, plan_for), tx=tx)

    async def _sealer(self, op: Operation, user_id: uuid.UUID, tx: AsyncConnection | None) -> Seal:
        personal = PersonalData.of(self._db)
        data_key = await op.run(partial(_key_for_writing, personal, user_id), tx=tx)
        return partial(personal.seal_memory_value, data_key=data_key)

    async def _store_locked(
        self, user_id: uuid.UUID, key: str, plan_for: PlanFor, conn: AsyncConnection
    ) -> MemoryEntry:
        repository = MemoryRepository(conn, user_id)
        written = await self._send(
            conn, repository, plan_for(await repository.get_for_update(key), self._db.clock())
        )
        if written is None:
            # Another transaction created the key since we looked; it is committed and now ours to lock.
            stored = await repository.get_for_update(key)
            assert stored is not None, "a key another transaction created stays until this one ends"
            written = await self._send(conn, repository, plan_for(stored, self._db.clock()))
            assert written is not None, "a plan over a stored row always writes"
        return written

    async def _send(
        self, conn: AsyncConnection, repository: MemoryRepository, plan: StorePlan
    ) -> MemoryEntry | None:
        """Write `plan` in `conn`'s transaction: its row, its audit entry, the caches' invalidation, then the cap if
        the plan meets it. None: the plan's new key was created by another transaction since it was planned."""
        if isinstance(plan, Unchanged):
            return plan.entry  # storing what is already stored changes nothing, so there is nothing to audit
        if isinstance(plan, MemoryChange):
            written = await repository.write_columns(plan.previous.memory_id, plan.columns)
        elif plan.replacing is not None:
            written = await repository.replace(plan, plan.replacing)
        else:
            created = await repository.insert_if_absent(plan)
            if created is None:
                return None
            written = created
        await self._record(conn, written.user_id, [written.key], [plan.audit])
        if plan.meets_cap:
            await self._enforce_cap(conn, repository, written, plan.audit)
        return written

    async def _enforce_cap(
        self, conn: AsyncConnection, repository: MemoryRepository, stored: MemoryEntry, cause: AuditEntry
    ) -> None:
        """Evict the user's least valuable non-critical memories beyond the cap, never `stored` itself."""
        # One user's stores take turns here, or two new keys could each see room for one.
        await repository.lock_owner()
        now = cause.timestamp
        excess = -self._planner.policy.room(
            await repository.count_live(now, exclude_tier=MemoryType.critical)
        )
        if excess <= 0:
            return
        candidates = await repository.eviction_candidates(
            now, exclude_tier=MemoryType.critical, keep=stored.memory_id
        )
        evicted = await repository.delete_ids(self._planner.evictions(candidates, excess, now))
        await self._record(
            conn,
            stored.user_id,
            [entry.key for entry in evicted],
            [removal_audit(AuditAction.evict, entry, now, cause.context) for entry in evicted],
        )

    async def _record(
        self, conn: AsyncConnection, user_id: uuid.UUID, keys: list[str], entries: Sequence[AuditEntry]
    ) -> None:
        """What every change of memories owes, in its transaction: the caches' invalidation and the audit rows."""
        await self._cache.invalidate_everywhere(conn, user_id, keys)
        await AuditManager.append(conn, entries)

    async def promote(self, conn: AsyncConnection, read: MemoryEntry) -> MemoryEntry:
        """Promote `read` if its locked row still calls for it: a store may have changed tier, importance or expiry
        since it was read (then the row as it is now; `read` if it is gone)."""
        repository = MemoryRepository(conn, read.user_id)
        current = await repository.get_for_update(read.key)
        if current is None or current.memory_id != read.memory_id:
            return read
        rule = self._planner.policy.promotion_for(
            current.memory_type, current.access_count, current.importance_score
        )
        if rule is None:
            return current
        plan = self._planner.promotion(current, rule, self._db.clock(), audit_context())
        promoted = await repository.promote(plan)
        await self._record(conn, current.user_id, [current.key], [plan.audit])
        return promoted

    async def delete(self, conn: AsyncConnection, user_id: uuid.UUID, key: str) -> bool:
        """Delete the user's live memory under `key`, audited with what it held; False if there was none."""
        now = self._db.clock()
        entry = await MemoryRepository(conn, user_id).delete(key, now)
        if entry is None:
            return False
        await self._record(
            conn, user_id, [key], [removal_audit(AuditAction.delete, entry, now, audit_context())]
        )
        return True

    async def purge_batch(self, conn: AsyncConnection, size: int) -> int:
        """Delete up to `size` expired memories (never critical ones), one audit row per user; how many."""
        now = self._db.clock()
        purged = await ExpiredMemoryRepository(conn).delete_batch(now, size, keep_tier=MemoryType.critical)
        by_user: dict[uuid.UUID, list[tuple[uuid.UUID, str]]] = {}
        for memory in purged:
            by_user.setdefault(memory.user_id, []).append((memory.memory_id, memory.key))
        context = audit_context()
        for owner, memories in by_user.items():
            await self._record(
                conn,
                owner,
                [key for _memory_id, key in memories],
                [purge_audit(owner, memories, now, context)],
            )
        return len(purged)
