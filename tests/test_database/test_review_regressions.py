"""Failure modes found in review: each is a user-visible promise (nothing half-written, typed errors only)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select, text

from stratus_db import (
    AuditManager,
    ConfigurationError,
    ConflictError,
    ConversationManager,
    Database,
    MemoryManager,
    UserManager,
    ValidationError,
)
from stratus_db.models import AuditRow
from tests.fixtures.databases import settings_for
from tests.fixtures.factories import count_rows, create_user

LONE_SURROGATE = "bad \ud800 text"


class TestJoinedTransactions:
    async def test_a_failed_call_leaves_nothing_behind_when_the_caller_carries_on(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        async with db.transaction() as tx:
            await conversations.add_message(conv.conversation_id, user.user_id, "primeira", tx=tx)
            with pytest.raises(ValidationError):
                await conversations.add_message(conv.conversation_id, user.user_id, LONE_SURROGATE, tx=tx)
            await conversations.add_message(conv.conversation_id, user.user_id, "segunda", tx=tx)
        messages = await conversations.get_messages(conv.conversation_id, user.user_id)
        assert [(m.seq, m.content) for m in messages] == [(1, "primeira"), (2, "segunda")]
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        assert stored.message_count == 2

    async def test_a_database_refusal_inside_a_joined_call_is_typed_and_rolled_back_to_the_savepoint(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        other = await create_user(users)
        async with db.transaction() as tx:
            await memories.store_memory(user.user_id, "kept", "x", "long_term", tx=tx)
            with pytest.raises(ConflictError):
                await users.update_user(other.user_id, email=user.email.upper(), tx=tx)
        assert await memories.get_memory(user.user_id, "kept") is not None


class TestStorableText:
    @pytest.mark.parametrize(
        ("call", "arguments"),
        [
            ("store_memory", {"key": LONE_SURROGATE, "value": "v"}),
            ("store_memory", {"key": "k", "value": {"nota": LONE_SURROGATE}}),
            ("store_memory", {"key": "k", "value": {LONE_SURROGATE: 1}}),
            ("get_memory", {"key": LONE_SURROGATE}),
        ],
    )
    async def test_lone_surrogates_are_validation_errors_for_memories(
        self, db: Database, users: UserManager, memories: MemoryManager, call: str, arguments: dict[str, Any]
    ) -> None:
        user = await create_user(users)
        with pytest.raises(ValidationError, match="surrogate"):
            await getattr(memories, call)(user_id=user.user_id, **arguments)
        assert await count_rows(db, "memory_entries") == 0

    async def test_lone_surrogates_in_messages_and_context_are_refused(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        with pytest.raises(ValidationError, match="surrogate"):
            await conversations.add_message(conv.conversation_id, user.user_id, LONE_SURROGATE)
        with pytest.raises(ValidationError, match="surrogate"):
            await conversations.add_message(
                conv.conversation_id, user.user_id, "oi", metadata={"k": LONE_SURROGATE}
            )
        with pytest.raises(ValidationError):
            async with db.context(user_agent=LONE_SURROGATE):
                pass
        assert await count_rows(db, "messages") == 0

    @pytest.mark.parametrize("cursor", ["WyJcdWQ4MDAiXQ", "WyJceDAwIl0", "WyJhXHUwMDAwIl0"])
    async def test_cursors_carrying_unstorable_text_are_refused(
        self, users: UserManager, memories: MemoryManager, cursor: str
    ) -> None:
        user = await create_user(users)
        with pytest.raises(ValidationError, match="cursor"):
            await memories.list_memories(user.user_id, cursor=cursor)


class TestNoParametersInErrors:
    async def test_a_driver_error_message_does_not_carry_what_the_user_wrote(self, db: Database) -> None:
        secret = "minha senha é hunter2"
        with pytest.raises(ConflictError) as caught:
            async with db.transaction() as conn:
                # A raw insert that breaks the role CHECK: PostgreSQL's error detail would quote the whole row.
                await conn.execute(
                    text(
                        "INSERT INTO users (user_id, name, email, email_index, role, licenses, preferences, "
                        "created_at, updated_at, last_active) "
                        "VALUES (:id, :name, :email, :index, :role, '[]', '{}', :t, :t, :t)"
                    ),
                    {
                        "id": "0" * 32,
                        "name": secret,
                        "email": secret,
                        "index": secret,
                        "role": secret,
                        "t": "2026-01-01 00:00:00",
                    }
                    if db.backend == "sqlite"
                    else {
                        "id": uuid.UUID(int=0),
                        "name": secret,
                        "email": secret,
                        "index": secret,
                        "role": secret,
                        "t": datetime.now(UTC),
                    },
                )
        assert secret not in caught.value.message
        assert "hunter2" not in repr(caught.value.__cause__)


class TestConcurrentStores:
    async def test_concurrent_stores_of_one_new_key_all_succeed_without_retries(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        retries_before = db.metrics()["operations"].get("memory.store", {}).get("retries", 0)
        results = await asyncio.gather(
            *(memories.store_memory(user.user_id, "base", f"SB{n:02d}", "long_term", 0.5) for n in range(12))
        )
        assert len({entry.memory_id for entry in results}) == 1
        assert await count_rows(db, "memory_entries") == 1
        assert db.metrics()["operations"]["memory.store"]["retries"] == retries_before
        actions = [
            e.action for e in (await AuditManager(db).query(record_id=results[0].memory_id, limit=50)).items
        ]
        assert actions.count("create") == 1

    async def test_concurrent_stores_inside_callers_transactions_all_succeed(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)

        async def store(n: int) -> None:
            async with db.transaction() as tx:
                await memories.store_memory(user.user_id, "base", f"SB{n:02d}", "long_term", tx=tx)

        await asyncio.gather(*(store(n) for n in range(6)))
        assert await count_rows(db, "memory_entries") == 1


class TestStoreKeepsWhatIsNotGiven:
    async def test_updating_only_the_value_keeps_tier_importance_and_lifetime_rules(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "base", "SBGR", "long_term", 0.9)
        updated = await memories.store_memory(user.user_id, "base", "SBKP")
        assert (updated.value, updated.memory_type, updated.importance_score, updated.expires_at) == (
            "SBKP",
            "long_term",
            0.9,
            None,
        )

    async def test_the_same_instant_in_another_time_zone_is_no_change(
        self, db: Database, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        instant = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
        await memories.store_memory(user.user_id, "k", "v", "medium_term", expires_at=instant)
        audit_rows = await count_rows(db, "audit_log")
        brasilia = timezone(timedelta(hours=-3))
        await memories.store_memory(
            user.user_id, "k", "v", "medium_term", expires_at=instant.astimezone(brasilia)
        )
        assert await count_rows(db, "audit_log") == audit_rows


async def test_audit_values_that_are_absent_are_sql_null(db: Database, users: UserManager) -> None:
    await create_user(users)
    async with db.transaction(read_only=True) as conn:
        nulls = (
            (await conn.execute(select(AuditRow.action).where(AuditRow.old_values.is_(None)))).scalars().all()
        )
    assert nulls == ["create"]


async def test_a_message_cannot_name_an_owner_its_conversation_does_not_have(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    owner = await create_user(users)
    intruder = await create_user(users)
    conv = await conversations.create_conversation(owner.user_id, "t")
    with pytest.raises(Exception) as caught:  # noqa: PT011 - raw SQL: the database itself must refuse
        async with db.transaction() as conn:
            await conn.execute(
                text(
                    "INSERT INTO messages (message_id, conversation_id, user_id, seq, message_type, content, "
                    "metadata, tokens_used, created_at) VALUES (:id, :c, :u, 1, 'user_input', 'x', '{}', 1, :t)"
                ),
                {
                    "id": conv.conversation_id.hex if db.backend == "sqlite" else conv.conversation_id,
                    "c": conv.conversation_id.hex if db.backend == "sqlite" else conv.conversation_id,
                    "u": intruder.user_id.hex if db.backend == "sqlite" else intruder.user_id,
                    "t": "2026-01-01 00:00:00" if db.backend == "sqlite" else datetime.now(UTC),
                },
            )
    assert type(caught.value).__name__ == "ConflictError"
    assert await count_rows(db, "messages") == 0


@pytest.mark.parametrize("database", ["no_such_database_for_stratus", None])
async def test_refused_credentials_or_database_are_configuration_errors_not_retried(
    postgres_url: str, database: str | None
) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    url = url.set(database=database) if database else url.set(username="no_such_role_for_stratus")
    db = Database(settings_for(url.render_as_string(hide_password=False)))
    try:
        with pytest.raises(ConfigurationError, match="DATABASE_URL"):
            await UserManager(db).get_user_by_email("a@aero.com")
        assert db.metrics()["operations"]["user.get_by_email"]["retries"] == 0
    finally:
        await db.close()
