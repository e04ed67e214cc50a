"""Bad days on PostgreSQL: the server ends the pool's connections under load, or while they sit idle.

Every error that leaves the library is a StratusError, no acknowledged write is lost, and once the server is healthy
again the very next calls succeed. The connections are ended for real (`pg_terminate_backend` on this test's own
database only, from a connection of its own), never mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy import event, select, text

from stratus_db import (
    ConversationManager,
    Database,
    DatabaseUnavailableError,
    MemoryManager,
    UserManager,
)
from stratus_db.models import MessageRow
from tests.fixtures.databases import settings_for, throwaway_postgres_database
from tests.fixtures.factories import create_user


@pytest.fixture
async def own_postgres_url() -> AsyncIterator[str]:
    """A database of this test's own: terminating its connections touches no other test's."""
    async with throwaway_postgres_database() as url:
        yield url


async def _admin(url: str) -> asyncpg.Connection:
    connection: asyncpg.Connection = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    return connection


async def _terminate_all_but(admin: asyncpg.Connection) -> int:
    """End every session on the admin connection's database but its own; wait until they are gone."""
    ended: int = await admin.fetchval(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return ended


class _Workload:
    """A user with memories and a conversation, and one call of each kind the pool serves."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.memories = MemoryManager(db)
        self.conversations = ConversationManager(db)
        self.acknowledged: list[uuid.UUID] = []

    async def seed(self) -> None:
        user = await create_user(UserManager(self.db))
        self.user_id = user.user_id
        for number in range(10):
            await self.memories.store_memory(self.user_id, f"k{number}", f"METAR de SBGR número {number}")
        conversation = await self.conversations.create_conversation(user_id=self.user_id, title="Voo")
        self.conversation_id = conversation.conversation_id

    def calls(self) -> dict[str, Callable[[], Awaitable[object]]]:
        return {
            "get_memory": lambda: self.memories.get_memory(self.user_id, f"k{random.randrange(10)}"),
            "search_memories": lambda: self.memories.search_memories(self.user_id, "metar sbgr"),
            "get_context": lambda: self.conversations.get_context(
                self.conversation_id, self.user_id, max_tokens=500
            ),
            "add_message": self.add_message,
        }

    async def add_message(self) -> None:
        message = await self.conversations.add_message(
            conversation_id=self.conversation_id,
            user_id=self.user_id,
            content="Qual o METAR de SBGR?",
            message_type="user_input",
        )
        self.acknowledged.append(message.message_id)


async def test_a_storm_of_terminations_gives_only_typed_errors_and_loses_no_acknowledged_write(
    own_postgres_url: str,
) -> None:
    # The get_memory cache is off so that every read reaches the pool.
    db = Database(settings_for(own_postgres_url).model_copy(update={"STRATUS_MEMORY_CACHE_MAX_ENTRIES": 0}))
    admin = await _admin(own_postgres_url)
    try:
        workload = _Workload(db)
        await workload.seed()
        calls = workload.calls()
        succeeded: Counter[str] = Counter()
        typed: Counter[str] = Counter()
        untyped: list[BaseException] = []
        storm_ends = time.monotonic() + 3

        async def caller() -> None:
            while time.monotonic() < storm_ends:
                name = random.choice(list(calls))
                try:
                    await calls[name]()
                    succeeded[name] += 1
                except DatabaseUnavailableError:
                    typed[name] += 1
                except Exception as exc:
                    untyped.append(exc)

        async def storm() -> None:
            while time.monotonic() < storm_ends:
                await _terminate_all_but(admin)
                await asyncio.sleep(0.05)

        await asyncio.gather(storm(), *(caller() for _ in range(8)))

        assert untyped == [], f"errors that are not DatabaseUnavailableError: {untyped[:5]!r}"
        assert set(succeeded) == set(calls), f"every kind of call succeeded at times: {succeeded}"
        async with db.transaction(read_only=True) as conn:
            stored = (
                await conn.execute(
                    select(MessageRow.message_id, MessageRow.seq).where(
                        MessageRow.conversation_id == workload.conversation_id
                    )
                )
            ).all()
        assert set(workload.acknowledged) <= {row.message_id for row in stored}, (
            "an acknowledged append was lost"
        )
        assert sorted(row.seq for row in stored) == list(range(1, len(stored) + 1)), "seq has gaps"
    finally:
        await admin.close()
        await db.close()


async def test_the_first_calls_after_every_connection_was_ended_succeed(own_postgres_url: str) -> None:
    db = Database(settings_for(own_postgres_url).model_copy(update={"STRATUS_MEMORY_CACHE_MAX_ENTRIES": 0}))
    admin = await _admin(own_postgres_url)
    try:
        workload = _Workload(db)
        await workload.seed()
        calls = workload.calls()
        # Eight connections at once, so that the pool holds more idle connections than a call has attempts.
        await asyncio.gather(*(calls["search_memories"]() for _ in range(8)))
        assert await _terminate_all_but(admin) > db.settings.STRATUS_RETRY_ATTEMPTS
        for name, call in calls.items():
            await call()  # raises if the server being healthy again is not enough
            assert db.metrics()["operations"][_operation(name)]["errors"] == 0, name
    finally:
        await admin.close()
        await db.close()


def _operation(call: str) -> str:
    return {
        "get_memory": "memory.get",
        "search_memories": "memory.search",
        "get_context": "conversation.get_context",
        "add_message": "conversation.add_message",
    }[call]


async def test_a_cancelled_call_does_not_make_the_pool_reconnect(own_postgres_url: str) -> None:
    """A cancelled call's connection is dropped (its statement may still run), but that says nothing of the others:
    only a connection the server ended makes the rest of the pool suspect."""
    db = Database(settings_for(own_postgres_url).model_copy(update={"STRATUS_POOL_SIZE": 8}))
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "connect", lambda *_args: opened.append(None))

    async def statement(sql: str = "SELECT pg_sleep(0.05)") -> None:
        async with db.transaction() as conn:
            await conn.execute(text(sql))

    try:
        await asyncio.gather(*(statement() for _ in range(8)))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await statement("SELECT pg_sleep(2)")
        opened.clear()
        await asyncio.gather(*(statement() for _ in range(8)))
        assert len(opened) <= 1, "only the cancelled call's connection is replaced"
    finally:
        await db.close()


async def test_a_driver_transaction_cancelled_at_any_point_leaves_no_transaction_open(
    own_postgres_url: str,
) -> None:
    """SQLAlchemy's reset on return knows nothing of a transaction the driver began: a connection whose transaction
    was not ended for sure is discarded, or the next caller would work inside it, its writes never committed."""
    settings = settings_for(own_postgres_url).model_copy(
        update={"STRATUS_POOL_SIZE": 1, "STRATUS_POOL_MAX_OVERFLOW": 0}
    )
    db = Database(settings)
    admin = await _admin(own_postgres_url)
    await admin.execute("CREATE TABLE probe (attempt int)")

    async def transaction() -> None:
        async with db.driver_transaction() as driver_transaction:
            await driver_transaction.fetch("SELECT pg_sleep(0.01)")

    try:
        for turns_before_cancel in range(12):
            task = asyncio.create_task(transaction())
            for _ in range(turns_before_cancel):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            async with db.operation("test.probe") as op:  # the pool's one connection, in autocommit
                await op.fetch("INSERT INTO probe VALUES ($1)", turns_before_cancel)
            seen = await admin.fetchval("SELECT count(*) FROM probe WHERE attempt = $1", turns_before_cancel)
            assert seen == 1, (
                f"cancelled after {turns_before_cancel} turns: the next write was left uncommitted"
            )
    finally:
        await admin.close()
        await db.close()
