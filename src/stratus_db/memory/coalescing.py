"""Coalescing of concurrent store_memory calls on PostgreSQL: many callers' updates, and new keys, in one statement.

LangGraph's store owes its put throughput to writing the puts of concurrent callers together; on two cores the Python
client, not the server, is what limits one-statement-per-call writers (docs/benchmarks.md). Here concurrent stores
share the work: each caller validates its arguments first, then queues its store; a batch reads the rows of all its
keys in one statement and decides each store in Python exactly as the one-at-a-time path does.

- A live key's update (`MemoryManager._plan_store`) is written with its audit row and its NOTIFY in one more
  statement, which only touches a row that still holds what its decision was made on. Both statements run outside
  any transaction: each is atomic, and the guard makes the pair behave as if the row had been locked at the read.
- A new key (`MemoryManager._plan_create`) is created in one short transaction for the whole batch: it locks the
  owners (as the locking path does, so no two cap checks of one user overlap), counts their live memories, and
  inserts, with their audit rows and NOTIFYs, the new memories that keep each owner within the cap.

Every call the batch does not finish goes back to its caller, which runs the ordinary locking transaction: a new key
that needs an eviction (or whose owner another transaction holds, or does not exist), an expired key (a new memory),
a memory leaving the critical tier (the cap), a key created or changed since it was read, a batch whose statement
failed. So each caller gets its own result or its own error, and one caller's
trouble never fails the others. Only a connection lost while the write was in flight fails the callers whose
changes it carried, as it fails a lone store: whether it committed cannot be known.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import DatabaseUnavailableError, StratusError
from stratus_db.kit import driver
from stratus_db.kit.coalescing import Queued
from stratus_db.kit.ids import new_id
from stratus_db.memory.cache import CHANNEL, MemoryCache
from stratus_db.memory.repository import (
    apply_updates_statement,
    count_live_statement,
    create_statement,
    lock_owners_statement,
    read_keys_statement,
)
from stratus_db.memory.schemas import MemoryEntry
from stratus_db.models import MemoryType

if TYPE_CHECKING:
    from stratus_db.database import Operation, StratusPostgreSQLIntegration


MAX_BATCH = 64
"""Stores written by one statement at most; the rest wait for the next batch."""
CREATE_LOCK_TIMEOUT = "50ms"
"""Longest wait for a lock in a batch's creations (PostgreSQL's lock_timeout): past it they take the locking path."""


@dataclass(frozen=True)
class MemoryUpdate:
    """What storing over a live memory changes: the columns to write and the audit row's old and new values."""

    previous: MemoryEntry
    values: dict[str, Any]
    """value, memory_type, importance_score, expires_at, search_text and updated_at."""
    old_values: dict[str, Any]
    new_values: dict[str, Any]


Plan = Callable[[MemoryEntry, datetime], "MemoryEntry | MemoryUpdate | None"]
"""Decides one store from the stored row and the batch's time: the memory itself when storing changes nothing, the
update to write, or None when the store needs the locking path."""


@dataclass(frozen=True)
class MemoryCreate:
    """What storing a key the user does not have writes: the new memory and its search text (its audit row's new
    values are the memory)."""

    entry: MemoryEntry
    search_text: str


CreatePlan = Callable[[datetime], MemoryCreate]
"""The new memory one store writes when its key does not exist, from the batch's time."""


@dataclass(eq=False)
class _QueuedStore(Queued[MemoryEntry | None]):
    user_id: uuid.UUID
    key: str
    plan: Plan
    create: CreatePlan
    audit_columns: dict[str, Any]
    """The audit row's context columns, taken in the caller's operation (its actor and trace id)."""


class StoreCoalescer:
    """The queue of one database handle's stores; one batch at a time is read, decided and written."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._cache = MemoryCache.of(db)
        self._queue: deque[_QueuedStore] = deque()
        self._runner: asyncio.Task[None] | None = None
        db.on_close(self.close)

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> StoreCoalescer:
        """The coalescer of this database handle, shared by every MemoryManager built on it."""
        return db.extension("memory.store_coalescer", lambda: cls(db))

    async def store(
        self, user_id: uuid.UUID, key: str, plan: Plan, create: CreatePlan, audit_columns: dict[str, Any]
    ) -> MemoryEntry | None:
        """The stored memory, or None when the caller must store it on the locking path itself.

        Raises:
            DatabaseUnavailableError: the connection was lost while this store's write was in flight.
        """
        queued = _QueuedStore(user_id, key, plan, create, audit_columns)
        self._queue.append(queued)
        if self._runner is None or self._runner.done():
            # The stores queued while it starts, and while a batch is in flight, form the next batch.
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await queued.outcome

    async def _run(self) -> None:
        while self._queue:
            batch = self._next_batch()
            try:
                # A failure here is logged by the batch's operation; it must not strand the stores still queued.
                with contextlib.suppress(Exception):
                    await self._write(batch)
            finally:
                # Whatever went wrong, nobody is left waiting: the rest take the locking path.
                for queued in batch:
                    queued.settle(None)

    def _next_batch(self) -> list[_QueuedStore]:
        """The oldest stores, one per key: a later store of a key must see the earlier one, so it waits its turn."""
        batch: list[_QueuedStore] = []
        keys: set[tuple[uuid.UUID, str]] = set()
        later: list[_QueuedStore] = []
        while self._queue and len(batch) < MAX_BATCH:
            queued = self._queue.popleft()
            if queued.outcome.done():
                continue  # its caller was cancelled before anything was written
            if (queued.user_id, queued.key) in keys:
                later.append(queued)
            else:
                keys.add((queued.user_id, queued.key))
                batch.append(queued)
        self._queue.extendleft(reversed(later))
        return batch

    def _log_failure(
        self, statement: str, stores: int, error: StratusError, *, callers_fail: bool = False
    ) -> None:
        # The locking path still stores everything, only slower: without this line a broken batch shows as slowness.
        self._db.log.warning(
            f"store batch {statement} lost its connection: its stores fail, they may have been written"
            if callers_fail
            else f"store batch {statement} failed: its stores take the locking path",
            operation="memory.store_batch",
            stores=stores,
            error=type(error).__name__,
        )

    async def _write(self, batch: list[_QueuedStore]) -> None:
        async with self._db.operation("memory.store_batch") as op:
            now = self._db.clock()

            try:
                sql, arguments = read_keys_statement(
                    [queued.user_id for queued in batch], [queued.key for queued in batch]
                )
                rows = await op.fetch(sql, *arguments, read_only=True)
            except StratusError as exc:
                # Every store takes the locking path, where its own error (if any) is raised again.
                self._log_failure("read", len(batch), exc)
                return
            stored = {(row["user_id"], row["key"]): row for row in rows}
            updates: list[tuple[_QueuedStore, MemoryUpdate]] = []
            creates: list[tuple[_QueuedStore, MemoryCreate]] = []
            for queued in batch:
                row = stored.get((queued.user_id, queued.key))
                try:
                    if row is None:
                        creates.append((queued, queued.create(now)))
                        continue
                    decision = queued.plan(MemoryEntry.model_validate(row), now)
                except StratusError:
                    continue  # its caller's own run raises it, with the locking path's message
                if isinstance(decision, MemoryUpdate):
                    updates.append((queued, decision))
                else:
                    queued.settle(decision)
            if updates:
                await self._apply_updates(op, updates, now)
            if creates:
                await self._apply_creates(creates, now)

    def _write_failed(
        self, statement: str, stores: int, exc: StratusError, *, maybe_written: list[_QueuedStore]
    ) -> None:
        """A batch's write failed: the callers whose stores it may have written (the connection was lost while it
        was in flight) fail, as a lone store would; every other store takes the locking path."""
        self._log_failure(statement, stores, exc, callers_fail=bool(maybe_written))
        for queued in maybe_written:
            # Each caller gets an error of its own (an exception object is not shared between tasks).
            error = DatabaseUnavailableError(exc.message)
            error.__cause__ = exc
            queued.fail(error)

    async def _apply_updates(
        self, op: Operation, updates: list[tuple[_QueuedStore, MemoryUpdate]], now: datetime
    ) -> None:
        changes = [self._change(queued, update) for queued, update in updates]
        for queued, _update in updates:
            self._cache.invalidate(queued.user_id, [queued.key])
        try:
            sql, arguments = apply_updates_statement(
                changes, now=now, audited_at=self._db.clock(), channel=CHANNEL
            )
            written = await op.fetch(sql, *arguments)
        except StratusError as exc:
            lost = isinstance(exc, DatabaseUnavailableError) and not exc.retryable
            self._write_failed(
                "write", len(updates), exc, maybe_written=[queued for queued, _ in updates] if lost else []
            )
            return
        self._settle_written([(queued, update.previous.memory_id) for queued, update in updates], written)

    async def _apply_creates(self, creates: list[tuple[_QueuedStore, MemoryCreate]], now: datetime) -> None:
        """Create the new keys in one transaction: lock their owners, count their live memories, and write those
        that leave each owner within the cap, with their audit rows and NOTIFYs.

        The rest take the locking path: an owner another transaction holds (it checks the cap now), a missing owner
        (NotFoundError), a store that needs an eviction, a key created meanwhile. Waiting is bounded
        (CREATE_LOCK_TIMEOUT): a key that another transaction is inserting, or locks taken in another order by the
        locking path, send the whole batch's creations there rather than hold up every store queued behind it. Not
        retried, for the same reason."""
        accepted: list[tuple[_QueuedStore, MemoryCreate]] = []
        committing = False
        for queued, _create in creates:
            self._cache.invalidate(queued.user_id, [queued.key])
        try:
            async with self._db.transaction() as conn:
                written = await self._create_within(conn, creates, now, accepted)
                committing = True
        except StratusError as exc:
            # Before COMMIT nothing was written: the locking path stores everything. During it, the accepted
            # creations may have been.
            lost = committing and isinstance(exc, DatabaseUnavailableError) and not exc.retryable
            self._write_failed(
                "create", len(creates), exc, maybe_written=[queued for queued, _ in accepted] if lost else []
            )
            return
        self._settle_written([(queued, create.entry.memory_id) for queued, create in accepted], written)

    async def _create_within(
        self,
        conn: AsyncConnection,
        creates: list[tuple[_QueuedStore, MemoryCreate]],
        now: datetime,
        accepted: list[tuple[_QueuedStore, MemoryCreate]],
    ) -> list[dict[str, Any]]:
        """`_apply_creates`' transaction; `accepted` receives the creations it sends."""
        sql, arguments = lock_owners_statement(
            list({queued.user_id for queued, _create in creates}), lock_timeout=CREATE_LOCK_TIMEOUT
        )
        locked = [row["user_id"] for row in await driver.fetch(conn, sql, *arguments)]
        if not locked:
            return []
        # After the locks, in a statement of its own: READ COMMITTED takes its snapshot when a statement starts.
        sql, arguments = count_live_statement(locked, now, exclude_tier=MemoryType.critical)
        live = {row["user_id"]: row["live"] for row in await driver.fetch(conn, sql, *arguments)}
        room = {owner: self._db.settings.STRATUS_MEMORY_MAX_PER_USER - live.get(owner, 0) for owner in locked}
        for queued, create in creates:
            if queued.user_id not in room:
                continue
            if create.entry.memory_type != MemoryType.critical:
                if room[queued.user_id] <= 0:
                    continue  # the locking path evicts to make room
                room[queued.user_id] -= 1
            accepted.append((queued, create))
        if not accepted:
            return []
        sql, arguments = create_statement(
            [self._creation(queued, create) for queued, create in accepted],
            now=now,
            audited_at=self._db.clock(),
            channel=CHANNEL,
        )
        return await driver.fetch(conn, sql, *arguments)

    def _settle_written(
        self, stores: list[tuple[_QueuedStore, uuid.UUID]], written: list[dict[str, Any]]
    ) -> None:
        """Give each store whose memory (by id) a statement wrote its row; the others take the locking path."""
        by_id = {row["memory_id"]: row for row in written}
        for queued, memory_id in stores:
            row = by_id.get(memory_id)
            if row is not None:
                # Committed: forget again what a concurrent read may have cached while the write was in flight.
                self._cache.invalidate(queued.user_id, [queued.key])
                row.pop("notified")
                queued.settle(MemoryEntry.model_validate(row))

    def _audited(self, queued: _QueuedStore) -> dict[str, Any]:
        """The columns every coalesced write adds: its audit row's id and context, and its NOTIFY's payload."""
        return {
            "audit_id": new_id(),
            "notification": self._cache.notification(queued.user_id, [queued.key]),
        } | queued.audit_columns

    def _creation(self, queued: _QueuedStore, create: MemoryCreate) -> dict[str, Any]:
        entry = create.entry
        return {
            "memory_id": entry.memory_id,
            "user_id": entry.user_id,
            "memory_type": str(entry.memory_type),
            "key": entry.key,
            "value": json.dumps(entry.value),
            "importance_score": entry.importance_score,
            "expires_at": entry.expires_at,
            "search_text": create.search_text,
            "new_values": json.dumps(entry.model_dump(mode="json")),
        } | self._audited(queued)

    def _change(self, queued: _QueuedStore, update: MemoryUpdate) -> dict[str, Any]:
        values, previous = update.values, update.previous
        return {
            "memory_id": previous.memory_id,
            "user_id": previous.user_id,
            "key": previous.key,
            "value": json.dumps(values["value"]),
            "memory_type": str(values["memory_type"]),
            "importance_score": values["importance_score"],
            "expires_at": values["expires_at"],
            "search_text": values["search_text"],
            "read_value": json.dumps(previous.value),
            "read_memory_type": str(previous.memory_type),
            "read_importance_score": previous.importance_score,
            "read_expires_at": previous.expires_at,
            "old_values": json.dumps(update.old_values),
            "new_values": json.dumps(update.new_values),
        } | self._audited(queued)

    async def close(self) -> None:
        """Let the batch under way finish (its callers are waiting for it) before the pool closes."""
        if self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)


def store_coalescer_for(db: StratusPostgreSQLIntegration) -> StoreCoalescer | None:
    """PostgreSQL's coalescer; none for SQLite, whose one writer at a time leaves nothing to share."""
    return StoreCoalescer.of(db) if db.backend == "postgresql" else None
