"""A handle's life: closed, it refuses every call instead of quietly opening a pool nothing would close; and an error
nothing translated still leaves the library as a StratusError, with its traceback in the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from stratus_db import (
    ConversationManager,
    Database,
    DatabaseClosedError,
    DatabaseUnavailableError,
    MemoryManager,
    UnexpectedError,
    UserManager,
)
from stratus_db.logging import LOGGER_NAME
from tests.fixtures.databases import handles_on
from tests.fixtures.factories import count_rows, create_user


@pytest.fixture
async def open_handle(db: Database) -> AsyncIterator[Callable[..., Database]]:
    async for opener in handles_on(db):
        yield opener


async def test_a_closed_handle_refuses_every_call_and_opens_no_connection(
    db: Database, open_handle: Callable[..., Database]
) -> None:
    handle = open_handle()
    users, memories = UserManager(handle), MemoryManager(handle)
    user = await create_user(users)
    await memories.store_memory(user.user_id, "base", "SBGR", "long_term")
    await memories.get_memory(user.user_id, "base")  # cached: a hit needs no connection
    await handle.close()

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "create_user": lambda: create_user(users),
        "get_user": lambda: users.get_user(user.user_id),
        "get_memory": lambda: memories.get_memory(user.user_id, "base"),
        "store_memory": lambda: memories.store_memory(user.user_id, "other", "SBKP"),
        "create_conversation": lambda: ConversationManager(handle).create_conversation(user_id=user.user_id),
    }
    for name, call in calls.items():
        with pytest.raises(DatabaseClosedError, match="was closed"):
            await call()
        assert handle.engine.pool.checkedin() == 0, f"{name} opened a connection"  # type: ignore[attr-defined]
    with pytest.raises(DatabaseClosedError):
        async with handle.transaction():
            pass
    health = await handle.health_check()
    assert not health.healthy
    assert health.error is not None
    assert "closed" in health.error
    await handle.close()  # closing twice is harmless
    assert handle.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert await count_rows(db, "users") == 1
    assert await count_rows(db, "memory_entries") == 1


async def test_an_error_nothing_translated_is_an_unexpected_error_with_its_traceback_logged(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async def defective_call() -> None:
        async with db.operation("test.defect"):
            nothing: dict[str, int] = {}
            nothing["key"]  # the defect under test

    with (
        caplog.at_level(logging.WARNING, logger=LOGGER_NAME),
        pytest.raises(UnexpectedError, match=r"test\.defect failed unexpectedly \(KeyError\)") as raised,
    ):
        await defective_call()
    assert isinstance(raised.value.__cause__, KeyError)
    records = [record for record in caplog.records if record.name == LOGGER_NAME]
    assert [(record.levelname, record.getMessage()) for record in records] == [
        ("WARNING", "test.defect failed"),
        ("ERROR", "test.defect failed unexpectedly"),
    ]
    error = records[1]
    assert error.exc_info is not None, "with its traceback"
    assert isinstance(error.exc_info[1], KeyError)
    assert db.metrics()["operations"]["test.defect"]["errors"] == 1


async def test_closing_from_two_tasks_during_a_call_waits_for_it_once(
    db: Database, open_handle: Callable[..., Database]
) -> None:
    handle = open_handle()
    users = UserManager(handle)
    created = asyncio.create_task(create_user(users))
    await asyncio.sleep(0)  # the call is under way
    await asyncio.wait_for(asyncio.gather(handle.close(), handle.close()), timeout=30)  # a hang guard only
    assert created.done()
    assert created.exception() is None, "the call under way finished before the pool closed"
    assert await count_rows(db, "users") == 1


async def test_a_helper_failing_to_flush_still_closes_the_pool(open_handle: Callable[..., Database]) -> None:
    handle = open_handle()
    await create_user(UserManager(handle))  # the pool holds a connection

    async def failing_flush() -> None:
        raise DatabaseUnavailableError("cannot write the buffered counts")

    handle.on_close(failing_flush)
    with pytest.raises(DatabaseUnavailableError, match="buffered counts"):
        await handle.close()
    assert handle.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    with pytest.raises(DatabaseClosedError):
        await create_user(UserManager(handle))
