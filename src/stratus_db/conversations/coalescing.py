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

import asyncio
import contextlib
import contextvars
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratus_db.conversations.repository import Appended, appended_by_message, appends_statement
from stratus_db.errors import DatabaseUnavailableError, StratusError
from stratus_db.kit.coalescing import Queued

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

MAX_BATCH = 256
"""Appends written by one statement at most; the rest wait for the next one."""
MAX_IN_FLIGHT = 2
"""Statements out at once: two let client and server overlap; more would only queue on the same rows and cores."""


@dataclass(eq=False)
class _QueuedAppend(Queued[Appended | None]):
    message: dict[str, Any]
    audit_row: dict[str, Any]


class AppendCoalescer:
    """The queue of one database handle's appends; at most two statements are in flight."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._queue: deque[_QueuedAppend] = deque()
        self._in_flight: dict[asyncio.Task[None], set[uuid.UUID]] = {}
        """The statements out, with the conversations each writes."""
        self._dispatch_pending = False
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
        self._schedule_dispatch()
        return await queued.outcome

    def _schedule_dispatch(self) -> None:
        # After the callbacks already due: the callers woken together by a finished batch queue again first, and
        # leave together in the next one.
        if not self._dispatch_pending:
            self._dispatch_pending = True
            # In a context of its own: the batch's operation logs under its own trace id, not its first caller's.
            asyncio.get_running_loop().call_soon(self._dispatch, context=contextvars.Context())

    def _dispatch(self) -> None:
        """Send what is queued while fewer than MAX_IN_FLIGHT statements are out.

        With nothing in flight the queue leaves as two halves: when one half's callers come back they prepare their
        next appends while the server still writes the other half, so client and server work side by side instead
        of taking turns (one statement at a time kept one of two cores idle). An append to a conversation that a
        statement in flight writes waits for the next one: sent now, its statement would wait for that row's lock
        until the other commits, and hold up every other append it carries.
        """
        self._dispatch_pending = False
        while self._queue and len(self._in_flight) < MAX_IN_FLIGHT:
            busy = set().union(*self._in_flight.values())
            waiting = [queued for queued in self._queue if not queued.outcome.done()]
            ready = [queued for queued in waiting if queued.message["conversation_id"] not in busy]
            batch = self._next_batch(ready, free=MAX_IN_FLIGHT - len(self._in_flight))
            sent = {id(queued) for queued in batch}
            self._queue = deque(queued for queued in waiting if id(queued) not in sent)
            if not batch:
                return
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight[task] = {queued.message["conversation_id"] for queued in batch}
            task.add_done_callback(self._finished)

    @staticmethod
    def _next_batch(ready: list[_QueuedAppend], *, free: int) -> list[_QueuedAppend]:
        """About an equal share of the ready appends for each free slot, in queue order; a conversation's appends
        all go in one statement (up to MAX_BATCH: the rest follow in the next)."""
        share = -(-len(ready) // free)
        batch: list[_QueuedAppend] = []
        taken: set[uuid.UUID] = set()
        for queued in ready:
            if len(batch) == MAX_BATCH:
                break
            conversation_id = queued.message["conversation_id"]
            if conversation_id in taken or len(batch) < share:
                batch.append(queued)
                taken.add(conversation_id)
        return batch

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._in_flight[task]
        if self._queue:
            self._schedule_dispatch()

    async def _send(self, batch: list[_QueuedAppend]) -> None:
        try:
            # A failure is logged by the batch's operation; it must not strand the appends still queued.
            with contextlib.suppress(Exception):
                await self._write(batch)
        finally:
            for queued in batch:
                queued.settle(None)  # whatever went wrong, nobody is left waiting

    async def _write(self, batch: list[_QueuedAppend]) -> None:
        async with self._db.operation("conversation.append_batch") as op:
            statement, arguments = appends_statement([(queued.message, queued.audit_row) for queued in batch])
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
                if lost:
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
        """Let the statements under way finish (their callers are waiting for them) before the pool closes."""
        while self._in_flight or self._queue:
            if self._in_flight:
                await asyncio.shield(asyncio.gather(*self._in_flight, return_exceptions=True))
            else:
                await asyncio.sleep(0)  # the queue's dispatch is due: let it send
