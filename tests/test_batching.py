"""kit/batching.py on its own: batches, keys, the in-flight limit, each caller's own outcome, cancellation, close().

The batcher knows nothing of databases: these tests give it a write function of their own, which records what it was
asked to write and answers as a domain would.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from stratus_db.errors import ConflictError, DatabaseUnavailableError, NotFoundError, StratusError
from stratus_db.kit.batching import Batcher, Outcome, each_caller_fails

caller_name: contextvars.ContextVar[str] = contextvars.ContextVar("caller_name", default="none")


class Writer:
    """A write function that records its batches and holds each until released (when `hold` is set)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.contexts: list[str] = []
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def write(self, items: list[tuple[str, int]]) -> Sequence[Outcome[str]]:
        self.batches.append(items)
        self.contexts.append(caller_name.get())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return [f"{key}:{number}" for key, number in items]


def batcher(
    writer: Writer, *, together: bool = False, in_flight: int = 1, size: int = 64
) -> Batcher[tuple[str, int], str]:
    return Batcher(
        writer.write, key=lambda item: item[0], key_together=together, max_batch=size, max_in_flight=in_flight
    )


async def test_concurrent_callers_share_batches_and_each_gets_its_own_result() -> None:
    writer = Writer()
    batches = batcher(writer, size=8)
    results = await asyncio.gather(*(batches.submit((f"k{n}", n)) for n in range(20)))
    assert results == [f"k{n}:{n}" for n in range(20)]
    assert [len(batch) for batch in writer.batches] == [8, 8, 4]


async def test_one_item_of_a_key_per_batch_the_next_waits_in_order() -> None:
    writer = Writer()
    batches = batcher(writer)
    results = await asyncio.gather(
        *(batches.submit(item) for item in [("a", 1), ("b", 1), ("a", 2), ("a", 3)])
    )
    assert results == ["a:1", "b:1", "a:2", "a:3"]
    assert writer.batches == [[("a", 1), ("b", 1)], [("a", 2)], [("a", 3)]]


async def test_a_keys_items_go_together_and_never_in_two_batches_in_flight() -> None:
    writer = Writer(hold=True)
    batches = batcher(writer, together=True, in_flight=2)
    first = [asyncio.create_task(batches.submit(item)) for item in [("a", 1), ("b", 1), ("a", 2), ("c", 1)]]
    await asyncio.sleep(0.01)
    # Two free slots: each takes about half of the ready items, and a key's items stay together.
    assert writer.batches == [[("a", 1), ("b", 1), ("a", 2)], [("c", 1)]]
    later = [asyncio.create_task(batches.submit(item)) for item in [("a", 3), ("d", 1)]]
    await asyncio.sleep(0.01)
    assert len(writer.batches) == 2, "both slots are busy: nothing more is sent"
    writer.release.set()
    await asyncio.gather(*first, *later)
    assert writer.most_in_flight == 2
    assert writer.batches[2:] == [[("a", 3)], [("d", 1)]], "two free slots again: shared again"


async def test_a_key_in_flight_waits_even_with_a_slot_free() -> None:
    writer = Writer(hold=True)
    batches = batcher(writer, in_flight=2)
    held = asyncio.create_task(batches.submit(("a", 1)))
    await asyncio.sleep(0.01)
    other = asyncio.create_task(batches.submit(("a", 2)))
    free = asyncio.create_task(batches.submit(("b", 1)))
    await asyncio.sleep(0.01)
    assert writer.batches == [[("a", 1)], [("b", 1)]], "('a', 2) waits for the batch writing 'a'"
    writer.release.set()
    assert list(await asyncio.gather(held, other, free)) == ["a:1", "a:2", "b:1"]


async def test_each_caller_gets_its_own_error_and_the_others_their_results() -> None:
    async def write(items: list[str]) -> Sequence[Outcome[str]]:
        return [
            NotFoundError(f"no {item}") if item == "missing" else None if item == "alone" else item.upper()
            for item in items
        ]

    batches: Batcher[str, str] = Batcher(
        write, key=lambda item: item, key_together=False, max_batch=8, max_in_flight=1
    )
    outcomes = await asyncio.gather(
        *(batches.submit(item) for item in ["x", "missing", "alone", "y"]), return_exceptions=True
    )
    assert outcomes[0] == "X"
    assert isinstance(outcomes[1], NotFoundError)
    assert outcomes[2] is None, "None: this caller writes alone"
    assert outcomes[3] == "Y"


async def test_a_write_that_raises_sends_every_caller_alone_and_the_next_batch_still_runs() -> None:
    calls = 0

    async def write(items: list[str]) -> Sequence[Outcome[str]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConflictError("the batch's statement failed; nothing was written")
        return [item.upper() for item in items]

    batches: Batcher[str, str] = Batcher(
        write, key=lambda item: item, key_together=False, max_batch=2, max_in_flight=1
    )
    assert await asyncio.gather(*(batches.submit(item) for item in "abcd")) == [None, None, "C", "D"]


async def test_a_short_answer_leaves_no_caller_waiting() -> None:
    async def write(items: list[str]) -> Sequence[Outcome[str]]:
        return [items[0].upper()]

    batches: Batcher[str, str] = Batcher(
        write, key=lambda item: item, key_together=False, max_batch=8, max_in_flight=1
    )
    assert await asyncio.gather(*(batches.submit(item) for item in "abc")) == ["A", None, None]


async def test_a_lost_connection_fails_each_caller_with_an_error_of_its_own() -> None:
    lost = DatabaseUnavailableError("lost the connection to PostgreSQL")

    async def write(items: list[str]) -> Sequence[Outcome[str]]:
        return each_caller_fails(lost, len(items))

    batches: Batcher[str, str] = Batcher(
        write, key=lambda item: item, key_together=False, max_batch=8, max_in_flight=1
    )
    errors = await asyncio.gather(*(batches.submit(item) for item in "abc"), return_exceptions=True)
    assert all(isinstance(error, DatabaseUnavailableError) for error in errors)
    assert len({id(error) for error in errors}) == 3, "an exception object is never shared between callers"
    assert all(isinstance(error, StratusError) and error.__cause__ is lost for error in errors)
    assert not any(isinstance(error, DatabaseUnavailableError) and error.retryable for error in errors)


async def test_a_caller_cancelled_before_its_batch_leaves_is_not_written() -> None:
    writer = Writer(hold=True)
    batches = batcher(writer)
    first = asyncio.create_task(batches.submit(("a", 1)))
    await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(batches.submit(("b", 1)))
    kept = asyncio.create_task(batches.submit(("c", 1)))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    writer.release.set()
    assert list(await asyncio.gather(first, kept)) == ["a:1", "c:1"]
    assert writer.batches == [[("a", 1)], [("c", 1)]]
    assert cancelled.cancelled()


async def test_a_caller_cancelled_in_flight_does_not_disturb_its_batch() -> None:
    writer = Writer(hold=True)
    batches = batcher(writer)
    leaving = asyncio.create_task(batches.submit(("a", 1)))
    staying = asyncio.create_task(batches.submit(("b", 1)))
    await asyncio.sleep(0.01)
    leaving.cancel()
    writer.release.set()
    assert await staying == "b:1"
    assert writer.batches == [[("a", 1), ("b", 1)]]


async def test_close_lets_queued_and_in_flight_batches_finish() -> None:
    writer = Writer(hold=True)
    batches = batcher(writer, size=1)
    callers = [asyncio.create_task(batches.submit((f"k{n}", n))) for n in range(3)]
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(batches.close())
    await asyncio.sleep(0.01)
    assert not closing.done(), "close() waits for the batch in flight"
    writer.release.set()
    await closing
    assert all(caller.done() for caller in callers)
    assert [caller.result() for caller in callers] == ["k0:0", "k1:1", "k2:2"]


async def test_a_batch_runs_in_a_context_of_its_own() -> None:
    writer = Writer()
    batches = batcher(writer)

    async def call_as(name: str) -> str | None:
        caller_name.set(name)
        return await batches.submit((name, 1))

    assert await call_as("first caller") == "first caller:1"
    assert writer.contexts == ["none"], "the batch does not run under its first caller's context"


@pytest.mark.parametrize("count", [0, 1, 5])
def test_each_caller_fails_makes_one_error_per_caller(count: int) -> None:
    cause = DatabaseUnavailableError("lost")
    errors = each_caller_fails(cause, count)
    assert len(errors) == count
    assert all(error.message == "lost" and error.__cause__ is cause for error in errors)
