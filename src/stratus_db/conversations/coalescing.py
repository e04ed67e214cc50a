"""Coalescing of concurrent add_message calls on PostgreSQL: many callers' appends in one statement.

On two cores the Python around each statement, not PostgreSQL, limits a writer that sends one statement per call
(docs/benchmarks.md). So appends are queued and written in batches: each caller validates its message and builds its
audit row first, then queues; a batch counts, numbers, inserts and audits all of its messages in one statement
(repository.py appends_statement), which is atomic on its own and runs without BEGIN/COMMIT. Two statements are in
flight at most, on different conversations, so that the callers of one prepare their next appends while the server
writes the other.

A message whose conversation the statement did not count (missing, foreign, archived or deleted), and every message of
a batch whose statement failed (a deadlock with another process's batch, say: nothing of it was written), goes back
to its caller, which appends it alone and gets its own result or its own error. Only a connection lost while the
statement was in flight fails the callers it carried, as it would fail a lone append: whether it committed cannot be
known.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from stratus_db.audit.rows import AuditEntry
from stratus_db.conversations.plans import NewMessage
from stratus_db.conversations.repository import Appended, appended_by_message, appends_statement
from stratus_db.errors import DatabaseUnavailableError, StratusError
from stratus_db.kit.batching import Batcher, Outcome, each_caller_fails

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

MAX_BATCH = 256
"""Appends written by one statement at most; the rest wait for the next one."""
MAX_IN_FLIGHT = 2
"""Statements out at once: two let client and server overlap; more would only queue on the same rows and cores."""


_Append = tuple[NewMessage, AuditEntry]


def _conversation(append: _Append) -> uuid.UUID:
    return append[0].conversation_id


class AppendCoalescer:
    """The appends of one database handle, batched (kit/batching.py): a conversation's queued appends all go in one
    statement, and an append to a conversation that a statement in flight writes waits for the next one (sent now,
    it would wait for that row's lock until the other commits, and hold up every other append it carries)."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._batcher: Batcher[_Append, Appended] = Batcher(
            self._write,
            key=_conversation,
            key_together=True,
            max_batch=MAX_BATCH,
            max_in_flight=MAX_IN_FLIGHT,
        )
        self._counts = {"statements": 0, "appended": 0, "returned": 0, "failed_statements": 0}
        """Statements sent, appends they wrote, appends handed back to their callers, statements that failed."""
        db.on_close(self._batcher.close)
        db.add_metrics_source("append_coalescer", lambda: dict(self._counts))

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> AppendCoalescer:
        return db.extension("conversations.append_coalescer", lambda: cls(db))

    async def append(self, message: NewMessage, audit: AuditEntry) -> Appended | None:
        """The appended message's number and time, or None when the caller must append it alone.

        Raises:
            DatabaseUnavailableError: the connection was lost while this append's statement was in flight.
        """
        return await self._batcher.submit((message, audit))

    async def _write(self, batch: list[_Append]) -> Sequence[Outcome[Appended]]:
        async with self._db.operation("conversation.append_batch") as op:
            statement, arguments = appends_statement(batch)
            self._counts["statements"] += 1
            try:
                appended = appended_by_message(await op.fetch(statement, *arguments))
            except StratusError as exc:
                lost = isinstance(exc, DatabaseUnavailableError) and not exc.retryable
                self._counts["failed_statements"] += 1
                self._counts["returned"] += 0 if lost else len(batch)
                self._db.log.warning(
                    "append batch lost its connection: its appends fail, they may have been written"
                    if lost
                    else "append batch failed: its appends are made one by one",
                    operation="conversation.append_batch",
                    appends=len(batch),
                    error=type(exc).__name__,
                )
                # Otherwise nothing was written: each caller appends alone and meets its own error, if any.
                return each_caller_fails(exc, len(batch)) if lost else [None] * len(batch)
            self._counts["appended"] += len(appended)
            self._counts["returned"] += len(batch) - len(appended)
            return [appended.get(message.message_id) for message, _audit in batch]
