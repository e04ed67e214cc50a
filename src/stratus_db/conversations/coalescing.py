"""Coalescing of concurrent add_message calls on PostgreSQL: many callers' appends in one statement.

On two cores the Python around each statement, not PostgreSQL, limits a writer that sends one statement per call
(docs/benchmarks.md). So the appends that arrive while a statement is in flight are written together by the next one:
each caller validates its message and builds its audit row first, then queues; a batch counts, numbers, inserts and
audits all of its messages in one statement (ConversationRepository.append_many), which is atomic on its own and
runs without BEGIN/COMMIT.

A message whose conversation the statement did not count (missing, foreign, archived or deleted), and every message of
a batch whose statement failed (a deadlock with another process's batch, say: nothing of it was written), goes back
to its caller, which appends it alone and gets its own result or its own error. Only a connection lost while the
statement was in flight fails the callers it carried, as it would fail a lone append: whether it committed cannot be
known.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratus_db.conversations.repository import Appended, ConversationRepository
from stratus_db.errors import DatabaseUnavailableError, StratusError
from stratus_db.kit.coalescing import Queued

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from stratus_db.database import StratusPostgreSQLIntegration

MAX_BATCH = 256
"""Appends written by one statement at most; the rest wait for the next one."""


@dataclass(eq=False)
class _QueuedAppend(Queued[Appended | None]):
    message: dict[str, Any]
    audit_row: dict[str, Any]


class AppendCoalescer:
    """The queue of one database handle's appends; one statement at a time is in flight."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._queue: deque[_QueuedAppend] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._counts = {"statements": 0, "appended": 0, "returned": 0, "failed_statements": 0}
        """Statements sent, appends they wrote, appends handed back to their callers, statements that failed."""
        db.on_close(self.close)
        db.add_metrics_source("append_coalescer", lambda: dict(self._counts))

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> AppendCoalescer:
        return db.extension("conversations.append_coalescer", lambda: cls(db))

    async def append(self, message: dict[str, Any], audit_row: dict[str, Any]) -> Appended | None:
        """The appended message's number and time, or None when the caller must append it alone.

        Raises:
            DatabaseUnavailableError: the connection was lost while this append's statement was in flight.
        """
        queued = _QueuedAppend(message, audit_row)
        self._queue.append(queued)
        if self._runner is None or self._runner.done():
            # The appends queued while it starts, and while a statement is in flight, form the next batch.
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await queued.outcome

    async def _run(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            batch = [queued for queued in batch if not queued.outcome.done()]
            try:
                # A failure is logged by the batch's operation; it must not strand the appends still queued.
                with contextlib.suppress(Exception):
                    await self._write(batch)
            finally:
                for queued in batch:
                    queued.settle(None)  # whatever went wrong, nobody is left waiting

    async def _write(self, batch: list[_QueuedAppend]) -> None:
        if not batch:
            return
        async with self._db.operation("conversation.append_batch") as op:

            async def write(conn: AsyncConnection) -> dict[Any, Appended]:
                if len(batch) == 1:  # alone: the lighter one-message statement
                    message, audit_row = batch[0].message, batch[0].audit_row
                    one = await ConversationRepository(conn, message["user_id"]).append(message, audit_row)
                    return {} if one is None else {message["message_id"]: one}
                return await ConversationRepository.append_many(
                    conn, [(queued.message, queued.audit_row) for queued in batch]
                )

            self._counts["statements"] += 1
            try:
                appended = await op.run(write, single_statement=True)
            except StratusError as exc:
                self._counts["failed_statements"] += 1
                self._counts["returned"] += len(batch)
                self._db.log.warning(
                    "append batch failed: its appends are made one by one",
                    operation="conversation.append_batch",
                    appends=len(batch),
                    error=type(exc).__name__,
                )
                if isinstance(exc, DatabaseUnavailableError) and not exc.retryable:
                    for queued in batch:
                        # Each caller gets an error of its own (an exception object is not shared between tasks).
                        error = DatabaseUnavailableError(exc.message)
                        error.__cause__ = exc
                        queued.fail(error)
                return  # otherwise nothing was written: each caller appends alone and meets its own error, if any
            self._counts["appended"] += len(appended)
            self._counts["returned"] += len(batch) - len(appended)
            for queued in batch:
                queued.settle(appended.get(queued.message["message_id"]))

    async def close(self) -> None:
        """Let the statement under way finish (its callers are waiting for it) before the pool closes."""
        if self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)
