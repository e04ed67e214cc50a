"""One batcher for every write that concurrent callers share (memory stores, message appends).

On two cores the Python around each statement, not PostgreSQL, limits a writer that sends one statement per call
(docs/benchmarks.md): concurrent callers' writes are queued and sent together. The batcher owns what every such write
needs and no domain should spell again: the queue, the limit of batches in flight, keys that must not be written by
two batches at once, a fresh context per batch (its log lines carry its own trace id, not its first caller's), each
caller settled or failed on its own, the fan-out of a lost connection, and close(). A domain supplies only "write
this batch, return each caller's result".

A caller gets its result; or None when the batch could not do its write (the caller then writes alone, on the
ordinary path, and meets its own result or error there); or the error of the batch's lost connection, when the write
may have committed and repeating it could write twice.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from stratus_db.errors import DatabaseUnavailableError, StratusError

Item = TypeVar("Item")
Result = TypeVar("Result")

Outcome: TypeAlias = Result | StratusError | None
"""What a batch's write gives one caller: its result, its own error, or None (the caller writes alone)."""


@dataclass(eq=False)
class _Queued(Generic[Item, Result]):
    item: Item
    key: Hashable
    outcome: asyncio.Future[Result | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, outcome: Result | StratusError | None) -> None:
        if self.outcome.done():
            return  # a caller cancelled meanwhile no longer listens
        if isinstance(outcome, StratusError):
            self.outcome.set_exception(outcome)
        else:
            self.outcome.set_result(outcome)


class Batcher(Generic[Item, Result]):
    """Queue items, write them in batches, give each caller its own outcome.

    Args:
        write: writes one batch; returns one outcome per item, in order. If it raises, every caller of the batch
            writes alone (the write is expected to raise only when nothing of the batch was written).
        key: items of one key are never in two batches in flight at once. With `key_together`, a batch takes every
            queued item of each key it takes (all of a conversation's appends in one statement); otherwise at most
            one (a later store of a key must see the earlier one, so it waits for the next batch).
        max_batch: items in one batch at most.
        max_in_flight: batches out at once. With more than one free, the ready items are shared between them, so
            that the callers of one batch prepare their next calls while the server writes the other.
    """

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[Sequence[Outcome[Result]]]],
        *,
        key: Callable[[Item], Hashable],
        key_together: bool,
        max_batch: int,
        max_in_flight: int,
    ) -> None:
        self._write = write
        self._key = key
        self._key_together = key_together
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: deque[_Queued[Item, Result]] = deque()
        self._in_flight: dict[asyncio.Task[None], set[Hashable]] = {}
        """The batches out, with the keys each writes."""
        self._dispatch_pending = False

    async def submit(self, item: Item) -> Result | None:
        """Queue `item`; its result, or None when the caller must write it alone.

        Raises:
            StratusError: the error the batch's write gave this item (a lost connection: it may be written).
        """
        queued: _Queued[Item, Result] = _Queued(item, self._key(item))
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
        self._dispatch_pending = False
        while self._queue and len(self._in_flight) < self._max_in_flight:
            busy: set[Hashable] = set().union(*self._in_flight.values())
            waiting = [queued for queued in self._queue if not queued.outcome.done()]  # not cancelled
            ready = [queued for queued in waiting if queued.key not in busy]
            batch = self._next_batch(ready, free=self._max_in_flight - len(self._in_flight))
            sent = {id(queued) for queued in batch}
            self._queue = deque(queued for queued in waiting if id(queued) not in sent)
            if not batch:
                return
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._in_flight[task] = {queued.key for queued in batch}
            task.add_done_callback(self._finished)

    def _next_batch(self, ready: list[_Queued[Item, Result]], *, free: int) -> list[_Queued[Item, Result]]:
        """About an equal share of the ready items for each free slot, in queue order."""
        share = -(-len(ready) // free)
        batch: list[_Queued[Item, Result]] = []
        taken: set[Hashable] = set()
        for queued in ready:
            if len(batch) == self._max_batch:
                break
            if queued.key in taken:
                if self._key_together:
                    batch.append(queued)
            elif len(batch) < share:
                batch.append(queued)
                taken.add(queued.key)
        return batch

    def _finished(self, task: asyncio.Task[None]) -> None:
        del self._in_flight[task]
        if self._queue:
            self._schedule_dispatch()

    async def _send(self, batch: list[_Queued[Item, Result]]) -> None:
        outcomes: Sequence[Outcome[Result]] = ()
        try:
            outcomes = await self._write([queued.item for queued in batch])
        except StratusError:
            pass  # nothing was written (the write logged why): every caller writes alone
        finally:
            # Whatever went wrong (the batch cancelled, say), nobody is left waiting.
            for index, queued in enumerate(batch):
                queued.settle(outcomes[index] if index < len(outcomes) else None)

    async def close(self) -> None:
        """Let the batches under way and those queued finish (their callers are waiting for them)."""
        while self._in_flight or self._queue:
            if self._in_flight:
                await asyncio.shield(asyncio.gather(*self._in_flight, return_exceptions=True))
            else:
                await asyncio.sleep(0)  # the queue's dispatch is due: let it send


def each_caller_fails(error: StratusError, count: int) -> Sequence[StratusError]:
    """A lost connection's error for each of `count` callers whose writes it may have committed: each gets an
    error object of its own (an exception is not shared between tasks), caused by the one the batch met."""
    errors: list[StratusError] = []
    for _ in range(count):
        own = DatabaseUnavailableError(error.message)
        own.__cause__ = error
        errors.append(own)
    return errors
