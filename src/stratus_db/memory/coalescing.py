"""The batched way to send store plans (memory/writes.py) on PostgreSQL: many callers' updates, and new keys, in one
statement.

LangGraph's store owes its put throughput to writing the puts of concurrent callers together; on two cores the Python
client, not the server, is what limits one-statement-per-call writers (docs/benchmarks.md). Here concurrent stores
share the work: each caller validates its arguments first, then queues its store; a batch reads the rows of all its
keys in one statement and plans each store (memory/plans.py) exactly as the locking path does.

- A live key's change (`MemoryChange`) is written with its audit row and its NOTIFY in one more statement, which only
  touches a row that still holds what its plan was made on. Both statements run outside any transaction: each is
  atomic, and the guard makes the pair behave as if the row had been locked at the read.
- A new key (`NewMemory`) is created in one short transaction for the whole batch: it locks the owners (as the locking
  path does, so no two cap checks of one user overlap), counts their live memories, and inserts, with their audit rows
  and NOTIFYs, the new memories that keep each owner within the cap.

Every call the batch does not finish goes back to its caller, which runs the ordinary locking transaction: a new key
that needs an eviction (or whose owner another transaction holds, or does not exist), an expired key (a new memory),
a memory leaving the critical tier (the cap), a key created or changed since it was read, a batch whose statement
failed. So each caller gets its own result or its own error, and one caller's trouble never fails the others. Only a
connection lost while the write was in flight fails the callers whose changes it carried, as it fails a lone store:
whether it committed cannot be known.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from stratus_db.errors import DatabaseUnavailableError, StratusError
from stratus_db.kit.batching import Batcher, Outcome, each_caller_fails
from stratus_db.kit.driver import DriverTransaction
from stratus_db.memory.cache import CHANNEL, MemoryCache
from stratus_db.memory.plans import MemoryChange, NewMemory, StorePlan, Unchanged
from stratus_db.memory.policy import MemoryPolicy
from stratus_db.memory.repository import (
    apply_updates_statement,
    count_live_statement,
    create_statement,
    entry_of,
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
MAX_IN_FLIGHT = 2
"""Batches out at once: while the server writes one, the client reads and plans the next (no key is in both)."""
CREATE_LOCK_TIMEOUT = "50ms"
"""Longest wait for a lock in a batch's creations (PostgreSQL's lock_timeout): past it they take the locking path."""


PlanFor = Callable[["MemoryEntry | None", datetime], StorePlan]
"""Plans one store from the row stored under its key (None: there is none) and the batch's time (memory/plans.py)."""


@dataclass(frozen=True)
class _Store:
    user_id: uuid.UUID
    key: str
    plan_for: PlanFor
    policy: MemoryPolicy
    """The caller's policy, whose cap its creation meets."""


def _memory_key(store: _Store) -> tuple[uuid.UUID, str]:
    return store.user_id, store.key


Decided = tuple[int, _Store, T]
"""A store's place in its batch, the store, and what the batch decided for it."""


class StoreCoalescer:
    """The stores of one database handle, batched (kit/batching.py): up to MAX_IN_FLIGHT batches are read, planned
    and written at once, with at most one store of a key among them (a later store of a key must see the earlier
    one: it waits)."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._cache = MemoryCache.of(db)
        self._batcher: Batcher[_Store, MemoryEntry] = Batcher(
            self._write, key=_memory_key, key_together=False, max_batch=MAX_BATCH, max_in_flight=MAX_IN_FLIGHT
        )
        db.on_close(self._batcher.close)

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> StoreCoalescer:
        """The coalescer of this database handle, shared by every MemoryManager built on it."""
        return db.extension("memory.store_coalescer", lambda: cls(db))

    async def store(
        self, user_id: uuid.UUID, key: str, plan_for: PlanFor, policy: MemoryPolicy
    ) -> MemoryEntry | None:
        """The stored memory, or None when the caller must store it on the locking path itself.

        Raises:
            DatabaseUnavailableError: the connection was lost while this store's write was in flight.
        """
        return await self._batcher.submit(_Store(user_id, key, plan_for, policy))

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
            stored = {(entry.user_id, entry.key): entry for entry in map(entry_of, rows)}
            changes: list[Decided[MemoryChange]] = []
            creations: list[Decided[NewMemory]] = []
            for index, store in enumerate(batch):
                try:
                    plan = store.plan_for(stored.get((store.user_id, store.key)), now)
                except StratusError:
                    continue  # the locking path raises it again, with its own message
                if isinstance(plan, Unchanged):
                    outcomes[index] = plan.entry
                elif isinstance(plan, MemoryChange):
                    if (
                        not plan.meets_cap
                    ):  # a memory leaving the critical tier meets the cap on the locking path
                        changes.append((index, store, plan))
                elif plan.replacing is None:  # an expired memory is replaced on the locking path
                    creations.append((index, store, plan))
            if changes:
                outcomes = self._merged(outcomes, await self._apply_changes(op, changes, now))
            if creations:
                outcomes = self._merged(outcomes, await self._apply_creations(creations, now))
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

    async def _apply_changes(
        self, op: Operation, changes: list[Decided[MemoryChange]], now: datetime
    ) -> dict[int, Outcome[MemoryEntry]]:
        for _index, store, _change in changes:
            self._cache.invalidate(store.user_id, [store.key])
        try:
            sql, arguments = apply_updates_statement(
                [(change, self._notification(store)) for _index, store, change in changes],
                now=now,
                channel=CHANNEL,
            )
            written = await op.fetch(sql, *arguments)
        except StratusError as exc:
            lost = isinstance(exc, DatabaseUnavailableError) and not exc.retryable
            return self._write_failed(
                "write", len(changes), exc, maybe_written=[index for index, _, _ in changes] if lost else []
            )
        return self._settled(
            [(index, store, change.previous.memory_id) for index, store, change in changes], written
        )

    async def _apply_creations(
        self, creations: list[Decided[NewMemory]], now: datetime
    ) -> dict[int, Outcome[MemoryEntry]]:
        """Create the new keys in one transaction: lock their owners, count their live memories, and write those
        that leave each owner within the cap, with their audit rows and NOTIFYs.

        The rest take the locking path: a missing owner (NotFoundError), a store that needs an eviction, a key
        created meanwhile. Waiting is bounded (CREATE_LOCK_TIMEOUT): an owner another transaction holds for longer
        than the other batch in flight would, a key that another transaction is inserting, or locks taken in another
        order by the locking path, send the whole batch's creations there rather than hold up every store queued
        behind it. Not retried, for the same reason."""
        accepted: list[Decided[NewMemory]] = []
        committing = False
        for _index, store, _new in creations:
            self._cache.invalidate(store.user_id, [store.key])
        try:
            async with self._db.driver_transaction() as transaction:
                written = await self._create_within(transaction, creations, now, accepted)
                committing = True
        except StratusError as exc:
            # Before COMMIT nothing was written: the locking path stores everything. During it, the accepted
            # creations may have been.
            lost = committing and isinstance(exc, DatabaseUnavailableError) and not exc.retryable
            return self._write_failed(
                "create",
                len(creations),
                exc,
                maybe_written=[index for index, _, _ in accepted] if lost else [],
            )
        return self._settled([(index, store, new.entry.memory_id) for index, store, new in accepted], written)

    async def _create_within(
        self,
        transaction: DriverTransaction,
        creations: list[Decided[NewMemory]],
        now: datetime,
        accepted: list[Decided[NewMemory]],
    ) -> list[dict[str, Any]]:
        """`_apply_creations`' transaction; `accepted` receives the creations it sends."""
        sql, arguments = lock_owners_statement(
            list({store.user_id for _index, store, _new in creations}), lock_timeout=CREATE_LOCK_TIMEOUT
        )
        locked = {row["user_id"] for row in await transaction.fetch(sql, *arguments)}
        if not locked:
            return []
        # After the locks, in a statement of its own: READ COMMITTED takes its snapshot when a statement starts.
        sql, arguments = count_live_statement(list(locked), now, exclude_tier=MemoryType.critical)
        live = {row["user_id"]: row["live"] for row in await transaction.fetch(sql, *arguments)}
        room: dict[uuid.UUID, int] = {}
        for decided in creations:
            _index, store, new = decided
            if store.user_id not in locked:
                continue
            room.setdefault(store.user_id, store.policy.room(live.get(store.user_id, 0)))
            if new.meets_cap:
                if room[store.user_id] <= 0:
                    continue  # the locking path evicts to make room
                room[store.user_id] -= 1
            accepted.append(decided)
        if not accepted:
            return []
        sql, arguments = create_statement(
            [(new, self._notification(store)) for _index, store, new in accepted], now=now, channel=CHANNEL
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
                outcomes[index] = entry_of(row)
        return outcomes

    def _notification(self, store: _Store) -> str:
        """The payload of the NOTIFY that tells the other processes' caches to forget the store's key."""
        return self._cache.notification(store.user_id, [store.key])
