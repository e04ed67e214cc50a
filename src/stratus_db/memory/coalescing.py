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

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from stratus_db.errors import DatabaseUnavailableError, StratusError
from stratus_db.kit.batching import Batcher, Outcome, each_caller_fails
from stratus_db.kit.driver import DriverTransaction
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


T = TypeVar("T")

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


@dataclass(frozen=True)
class _Store:
    user_id: uuid.UUID
    key: str
    plan: Plan
    create: CreatePlan
    audit_columns: dict[str, Any]
    """The audit row's context columns, taken in the caller's operation (its actor and trace id)."""


def _memory_key(store: _Store) -> tuple[uuid.UUID, str]:
    return store.user_id, store.key


Decided = tuple[int, _Store, T]
"""A store's place in its batch, the store, and what the batch decided for it."""


class StoreCoalescer:
    """The stores of one database handle, batched (kit/batching.py): one batch at a time is read, decided and
    written, with at most one store of a key (a later store of a key must see the earlier one: it waits)."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._cache = MemoryCache.of(db)
        self._batcher: Batcher[_Store, MemoryEntry] = Batcher(
            self._write, key=_memory_key, key_together=False, max_batch=MAX_BATCH, max_in_flight=1
        )
        db.on_close(self._batcher.close)

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
        return await self._batcher.submit(_Store(user_id, key, plan, create, audit_columns))

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

    async def _write(self, batch: list[_Store]) -> Sequence[Outcome[MemoryEntry]]:
        """Each store's stored memory; None for those that take the locking path (where a store's own error, if
        any, is raised again with the locking path's message)."""
        outcomes: list[Outcome[MemoryEntry]] = [None] * len(batch)
        async with self._db.operation("memory.store_batch") as op:
            now = self._db.clock()
            try:
                sql, arguments = read_keys_statement(
                    [store.user_id for store in batch], [store.key for store in batch]
                )
                rows = await op.fetch(sql, *arguments, read_only=True)
            except StratusError as exc:
                self._log_failure("read", len(batch), exc)
                return outcomes
            stored = {(row["user_id"], row["key"]): row for row in rows}
            updates: list[Decided[MemoryUpdate]] = []
            creates: list[Decided[MemoryCreate]] = []
            for index, store in enumerate(batch):
                row = stored.get((store.user_id, store.key))
                try:
                    if row is None:
                        creates.append((index, store, store.create(now)))
                        continue
                    decision = store.plan(MemoryEntry.model_validate(row), now)
                except StratusError:
                    continue
                if isinstance(decision, MemoryUpdate):
                    updates.append((index, store, decision))
                else:
                    outcomes[index] = decision
            if updates:
                outcomes = self._merged(outcomes, await self._apply_updates(op, updates, now))
            if creates:
                outcomes = self._merged(outcomes, await self._apply_creates(creates, now))
        return outcomes

    @staticmethod
    def _merged(
        outcomes: list[Outcome[MemoryEntry]], more: dict[int, Outcome[MemoryEntry]]
    ) -> list[Outcome[MemoryEntry]]:
        return [more.get(index, outcome) for index, outcome in enumerate(outcomes)]

    def _write_failed(
        self, statement: str, stores: int, exc: StratusError, *, maybe_written: list[int]
    ) -> dict[int, Outcome[MemoryEntry]]:
        """A batch's write failed: the callers whose stores it may have written (the connection was lost while it
        was in flight) fail, as a lone store would; every other store takes the locking path."""
        self._log_failure(statement, stores, exc, callers_fail=bool(maybe_written))
        return dict(zip(maybe_written, each_caller_fails(exc, len(maybe_written)), strict=True))

    async def _apply_updates(
        self, op: Operation, updates: list[Decided[MemoryUpdate]], now: datetime
    ) -> dict[int, Outcome[MemoryEntry]]:
        changes = [self._change(store, update) for _index, store, update in updates]
        for _index, store, _update in updates:
            self._cache.invalidate(store.user_id, [store.key])
        try:
            sql, arguments = apply_updates_statement(
                changes, now=now, audited_at=self._db.clock(), channel=CHANNEL
            )
            written = await op.fetch(sql, *arguments)
        except StratusError as exc:
            lost = isinstance(exc, DatabaseUnavailableError) and not exc.retryable
            return self._write_failed(
                "write", len(updates), exc, maybe_written=[index for index, _, _ in updates] if lost else []
            )
        return self._settled(
            [(index, store, update.previous.memory_id) for index, store, update in updates], written
        )

    async def _apply_creates(
        self, creates: list[Decided[MemoryCreate]], now: datetime
    ) -> dict[int, Outcome[MemoryEntry]]:
        """Create the new keys in one transaction: lock their owners, count their live memories, and write those
        that leave each owner within the cap, with their audit rows and NOTIFYs.

        The rest take the locking path: an owner another transaction holds (it checks the cap now), a missing owner
        (NotFoundError), a store that needs an eviction, a key created meanwhile. Waiting is bounded
        (CREATE_LOCK_TIMEOUT): a key that another transaction is inserting, or locks taken in another order by the
        locking path, send the whole batch's creations there rather than hold up every store queued behind it. Not
        retried, for the same reason."""
        accepted: list[Decided[MemoryCreate]] = []
        committing = False
        for _index, store, _create in creates:
            self._cache.invalidate(store.user_id, [store.key])
        try:
            async with self._db.driver_transaction() as transaction:
                written = await self._create_within(transaction, creates, now, accepted)
                committing = True
        except StratusError as exc:
            # Before COMMIT nothing was written: the locking path stores everything. During it, the accepted
            # creations may have been.
            lost = committing and isinstance(exc, DatabaseUnavailableError) and not exc.retryable
            return self._write_failed(
                "create", len(creates), exc, maybe_written=[index for index, _, _ in accepted] if lost else []
            )
        return self._settled(
            [(index, store, create.entry.memory_id) for index, store, create in accepted], written
        )

    async def _create_within(
        self,
        transaction: DriverTransaction,
        creates: list[Decided[MemoryCreate]],
        now: datetime,
        accepted: list[Decided[MemoryCreate]],
    ) -> list[dict[str, Any]]:
        """`_apply_creates`' transaction; `accepted` receives the creations it sends."""
        sql, arguments = lock_owners_statement(
            list({store.user_id for _index, store, _create in creates}), lock_timeout=CREATE_LOCK_TIMEOUT
        )
        locked = [row["user_id"] for row in await transaction.fetch(sql, *arguments)]
        if not locked:
            return []
        # After the locks, in a statement of its own: READ COMMITTED takes its snapshot when a statement starts.
        sql, arguments = count_live_statement(locked, now, exclude_tier=MemoryType.critical)
        live = {row["user_id"]: row["live"] for row in await transaction.fetch(sql, *arguments)}
        room = {owner: self._db.settings.STRATUS_MEMORY_MAX_PER_USER - live.get(owner, 0) for owner in locked}
        for decided in creates:
            _index, store, create = decided
            if store.user_id not in room:
                continue
            if create.entry.memory_type != MemoryType.critical:
                if room[store.user_id] <= 0:
                    continue  # the locking path evicts to make room
                room[store.user_id] -= 1
            accepted.append(decided)
        if not accepted:
            return []
        sql, arguments = create_statement(
            [self._creation(store, create) for _index, store, create in accepted],
            now=now,
            audited_at=self._db.clock(),
            channel=CHANNEL,
        )
        return await transaction.fetch(sql, *arguments)

    def _settled(
        self, stores: list[tuple[int, _Store, uuid.UUID]], written: list[dict[str, Any]]
    ) -> dict[int, Outcome[MemoryEntry]]:
        """Each store whose memory (by id) a statement wrote gets its row; the others take the locking path."""
        by_id = {row["memory_id"]: row for row in written}
        outcomes: dict[int, Outcome[MemoryEntry]] = {}
        for index, store, memory_id in stores:
            row = by_id.get(memory_id)
            if row is not None:
                # Committed: forget again what a concurrent read may have cached while the write was in flight.
                self._cache.invalidate(store.user_id, [store.key])
                row.pop("notified")
                outcomes[index] = MemoryEntry.model_validate(row)
        return outcomes

    def _audited(self, store: _Store) -> dict[str, Any]:
        """The columns every coalesced write adds: its audit row's id and context, and its NOTIFY's payload."""
        return {
            "audit_id": new_id(),
            "notification": self._cache.notification(store.user_id, [store.key]),
        } | store.audit_columns

    def _creation(self, store: _Store, create: MemoryCreate) -> dict[str, Any]:
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
        } | self._audited(store)

    def _change(self, store: _Store, update: MemoryUpdate) -> dict[str, Any]:
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
        } | self._audited(store)
