"""Access counts of cache hits, buffered: a hit counts in memory, and the counts are written in batches every flush
interval (STRATUS_MEMORY_CACHE_FLUSH_INTERVAL_S) and on close(), so that a hit costs no round trip."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, bindparam, case, or_, update

from stratus_db.errors import StratusError
from stratus_db.kit.models import table_of
from stratus_db.kit.tasks import start_background
from stratus_db.kit.types import UTCDateTime
from stratus_db.models import MemoryRow

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

CacheKey = tuple[uuid.UUID, str]
_memories = table_of(MemoryRow)


@dataclass
class _Pending:
    memory_id: uuid.UUID
    user_id: uuid.UUID
    count: int
    last_accessed_at: datetime


class AccessCounts:
    """The access counts of one handle's cache hits, not yet written."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._flush_interval = db.settings.STRATUS_MEMORY_CACHE_FLUSH_INTERVAL_S
        self._pending: dict[CacheKey, _Pending] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = False
        self._closed = False

    def add(self, key: CacheKey, memory_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> None:
        """Count one access of memory `memory_id` under `key`, at `now`; written at the next flush."""
        pending = self._pending.get(key)
        if pending is None or pending.memory_id != memory_id:
            self._pending[key] = _Pending(memory_id, user_id, 1, now)
        else:
            pending.count += 1
            pending.last_accessed_at = now
        self._schedule_flush()

    def pending(self, key: CacheKey, memory_id: uuid.UUID) -> int:
        """The accesses of memory `memory_id` under `key` counted here and not yet written."""
        pending = self._pending.get(key)
        return pending.count if pending is not None and pending.memory_id == memory_id else 0

    @property
    def total(self) -> int:
        return sum(pending.count for pending in self._pending.values())

    def _schedule_flush(self) -> None:
        if self._closed:
            return
        if self._flusher is None or self._flusher.done():
            self._flusher = start_background(
                self._flush_later(), log=self._db.log, what="memory.access_count_flush"
            )

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._flush_interval)
        self._flushing = True
        try:
            # Nobody awaits this task: the flush's operation logged any failure (a defect with its traceback), and
            # the counts were kept for the next flush.
            with contextlib.suppress(StratusError):
                await self.flush()
        finally:
            self._flushing = False

    async def flush(self) -> int:
        """Write the buffered access counts in one transaction; returns how many memories were updated.

        Shielded: a caller that is cancelled while waiting does not cancel the write, and counts that could not be
        written are kept for the next flush.
        """
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        return await asyncio.shield(self._write(batch))

    async def _write(self, batch: dict[CacheKey, _Pending]) -> int:
        last = bindparam("b_last", type_=UTCDateTime())
        statement = (
            update(_memories)
            .where(
                MemoryRow.memory_id == bindparam("b_memory_id"), MemoryRow.user_id == bindparam("b_user_id")
            )
            .values(
                access_count=MemoryRow.access_count + bindparam("b_count", type_=Integer()),
                last_accessed_at=case(
                    (or_(MemoryRow.last_accessed_at.is_(None), MemoryRow.last_accessed_at < last), last),
                    else_=MemoryRow.last_accessed_at,
                ),
            )
        )
        # In key order, so that two processes flushing the same memories lock them in the same order.
        parameters: list[dict[str, Any]] = [
            {
                "b_memory_id": p.memory_id,
                "b_user_id": p.user_id,
                "b_count": p.count,
                "b_last": p.last_accessed_at,
            }
            for p in sorted(batch.values(), key=lambda pending: pending.memory_id)
        ]
        try:
            async with self._db.operation("memory.flush_access_counts") as op:
                await op.run(lambda conn: conn.execute(statement, parameters))
        except BaseException:
            for key, pending in batch.items():
                current = self._pending.get(key)
                if current is not None and current.memory_id == pending.memory_id:
                    current.count += pending.count
                elif current is None:
                    self._pending[key] = pending
            self._schedule_flush()
            raise
        return len(parameters)

    async def close(self) -> None:
        """Write what is buffered; later counts are no longer scheduled (the handle is closing)."""
        if self._flusher is not None and not self._flusher.done():
            if not self._flushing:
                # Waiting, or not started yet (then it would wait a whole interval first): never a flush under way.
                self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # its failures are logged where they happen
                await self._flusher
        try:
            await self.flush()
        finally:
            self._closed = True
