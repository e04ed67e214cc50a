"""Bad days on PostgreSQL: the server ends the pool's connections under load, or while they sit idle.

Every error that leaves the library is a StratusError, no acknowledged write is lost, and once the server is healthy
again the very next calls succeed. The connections are ended for real (`pg_terminate_backend` on this test's own
database only, from a connection of its own), never mocked.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy import select

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
