"""apply_retention on both backends, under a clock the tests move: each rule deletes exactly what is past its
retention and nothing else (read back from the tables), every deletion is audited with the rule's reason, batches are
bounded and each commits on its own, unset rules and dry runs delete nothing, bad input writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import select

from stratus_db import (
    AuditManager,
    ConfigurationError,
    ConversationManager,
    Database,
    MemoryManager,
    PrivacyManager,
    UnexpectedError,
    UserManager,
    ValidationError,
)
from stratus_db.config import load_settings
from stratus_db.models import Base
from stratus_db.privacy.kinds import ErasableKind
from stratus_db.privacy.retention import RetentionKind
from stratus_db.users.activity import tracker_of
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user

DATA_TABLES = ("users", "user_credentials", "memory_entries", "conversations", "messages", "audit_log")


@asynccontextmanager
async def retaining(
    db: Database,
    clock: ManualClock,
    *,
    conversations: int = 0,
    memories: int = 0,
    accounts: int = 0,
    hold: frozenset[ErasableKind] = frozenset(),
) -> AsyncIterator[Database]:
    """A handle on the test's database with these retention settings (days), this legal hold and the test's
    clock."""
    settings = db.settings.model_copy(
        update={
            "STRATUS_RETENTION_CONVERSATIONS_DAYS": conversations,
            "STRATUS_RETENTION_MEMORIES_DAYS": memories,
            "STRATUS_RETENTION_INACTIVE_ACCOUNTS_DAYS": accounts,
            "STRATUS_ERASURE_LEGAL_HOLD": hold,
        }
    )
    handle = Database(settings, clock=clock)
    try:
        yield handle
    finally:
        await handle.close()


async def settled(handle: Database) -> None:
    """The writes the handle makes in the background (`last_active`) done, as a scheduled job would find them."""
    await tracker_of(handle).drain()


async def column(db: Database, table: str, name: str) -> set[Any]:
    async with db.transaction(read_only=True) as conn:
        return set((await conn.execute(select(Base.metadata.tables[table].c[name]))).scalars())


async def snapshot(db: Database) -> dict[str, int]:
    return {table: await count_rows(db, table) for table in DATA_TABLES}


async def test_conversations_without_activity_are_purged_with_their_messages(
    db: Database, clock: ManualClock
) -> None:
    async with retaining(db, clock, conversations=30) as handle:
        users, chats = UserManager(handle), ConversationManager(handle)
        ana, bia = await create_user(users), await create_user(users)
        stale = await chats.create_conversation(ana.user_id, "Antiga")
        await chats.add_messages(stale.conversation_id, ana.user_id, [{"content": f"m{i}"} for i in range(3)])
        archived = await chats.create_conversation(bia.user_id, "Arquivada")
        await chats.add_message(archived.conversation_id, bia.user_id, "Rota por SBKP")
        await chats.archive_conversation(archived.conversation_id, bia.user_id)
        touched = await chats.create_conversation(ana.user_id, "Retomada")
        clock.advance(days=20)
        await chats.add_message(touched.conversation_id, ana.user_id, "De volta")
        recent = await chats.create_conversation(bia.user_id, "Nova")
        await MemoryManager(handle).store_memory(ana.user_id, "base", "SBGR", "long_term")
        clock.advance(days=15)  # stale and archived: 35 days without activity; touched and recent: 15
        await settled(handle)
        audit_before = await count_rows(db, "audit_log")

        report = await PrivacyManager(handle).apply_retention()

    assert (report.deleted, report.messages, report.dry_run) == ({RetentionKind.conversations: 2}, 4, False)
    assert [(rule.kind, rule.days) for rule in report.rules] == [(RetentionKind.conversations, 30)]
    kept = {touched.conversation_id, recent.conversation_id}
    assert await column(db, "conversations", "conversation_id") == kept
    assert await column(db, "messages", "conversation_id") == {touched.conversation_id}
    assert await count_rows(db, "users") == 2
    assert await count_rows(db, "memory_entries") == 1
    purges = (await AuditManager(db).query(action="purge", table="conversations")).items
    assert {event.record_id for event in purges} == {stale.conversation_id, archived.conversation_id}
    assert {event.record_id: event.user_id for event in purges} == {
        stale.conversation_id: ana.user_id,
        archived.conversation_id: bia.user_id,
    }
    assert {event.new_values["reason"] for event in purges} == {"retention: no activity for 30 days"}
    assert sorted(event.old_values["message_count"] for event in purges) == [1, 3]
    assert {event.old_values["status"] for event in purges} == {"active", "archived"}
    assert await count_rows(db, "audit_log") == audit_before + 2, "one row per conversation, nothing else"


async def test_memories_neither_updated_nor_read_are_purged(db: Database, clock: ManualClock) -> None:
    async with retaining(db, clock, memories=60) as handle:
        users, memories = UserManager(handle), MemoryManager(handle)
        ana, bia = await create_user(users), await create_user(users)
        for key in ("esquecida", "lida", "atualizada"):
            await memories.store_memory(ana.user_id, key, f"valor {key}", "long_term")
        await memories.store_memory(ana.user_id, "critica", "alergia a dipirona", "critical")
        await memories.store_memory(bia.user_id, "esquecida", "do outro", "long_term")
        clock.advance(days=50)
        await memories.store_memory(ana.user_id, "atualizada", "valor novo", "long_term")
        assert await memories.get_memory(ana.user_id, "lida") is not None
        clock.advance(days=11)  # 61 days since the first stores, 11 since the update and the read
        await settled(handle)
    # A fresh handle: the first one's buffered access counts (the read's last_accessed_at) were written on close.
    async with retaining(db, clock, memories=60) as handle:
        audit_before = await count_rows(db, "audit_log")

        report = await PrivacyManager(handle).apply_retention()

    assert report.deleted == {RetentionKind.memories: 3}
    left = {(row_owner, key) for row_owner, key in await owners_and_keys(db)}
    assert left == {(ana.user_id, "lida"), (ana.user_id, "atualizada")}
    purges = (await AuditManager(db).query(action="purge", table="memory_entries")).items
    assert {event.user_id: sorted(event.old_values["keys"]) for event in purges} == {
        ana.user_id: ["critica", "esquecida"],
        bia.user_id: ["esquecida"],
    }, "one row per user and batch"
    assert {event.new_values["reason"] for event in purges} == {
        "retention: neither updated nor read for 60 days"
    }
    assert await count_rows(db, "audit_log") == audit_before + 2
    assert await count_rows(db, "users") == 2


async def owners_and_keys(db: Database) -> list[tuple[uuid.UUID, str]]:
    table = Base.metadata.tables["memory_entries"]
    async with db.transaction(read_only=True) as conn:
        return [(row.user_id, row.key) for row in await conn.execute(select(table.c.user_id, table.c.key))]


async def test_inactive_accounts_are_erased(db: Database, clock: ManualClock) -> None:
    async with retaining(db, clock, accounts=365) as handle:
        users, memories, chats = UserManager(handle), MemoryManager(handle), ConversationManager(handle)
        gone = await create_user(users)
        await memories.store_memory(gone.user_id, "base", "SBGR", "long_term")
        chat = await chats.create_conversation(gone.user_id, "Antiga")
        await chats.add_message(chat.conversation_id, gone.user_id, "Rota por SBKP")
        active = await create_user(users)
        clock.advance(days=200)
        newcomer = await create_user(users)
        clock.advance(days=100)
        await memories.store_memory(active.user_id, "base", "SBSP", "long_term")  # last_active moves to now
        clock.advance(days=66)  # gone: 366 days inactive; active: 66; newcomer: 166
        await settled(handle)

        report = await PrivacyManager(handle).apply_retention()

    assert report.deleted == {RetentionKind.inactive_accounts: 1}
    assert await column(db, "users", "user_id") == {active.user_id, newcomer.user_id}
    assert await column(db, "memory_entries", "user_id") == {active.user_id}
    assert await count_rows(db, "conversations") == 0
    assert await count_rows(db, "messages") == 0
    trail = AuditManager(db)
    assert (await trail.query(user_id=gone.user_id)).items == [], (
        "the audit rows about them are pseudonymised"
    )
    erasures = (await trail.query(action="erase")).items
    assert len(erasures) == 1
    assert erasures[0].new_values["reason"] == "retention: inactive for 365 days"
    assert erasures[0].new_values["deleted"]["users"] == 1


async def test_a_tombstone_under_legal_hold_is_not_erased_again(db: Database, clock: ManualClock) -> None:
    async with retaining(db, clock, accounts=30, hold=frozenset({ErasableKind.conversations})) as handle:
        person = await create_user(UserManager(handle))
        chat = await ConversationManager(handle).create_conversation(person.user_id, "Instrução")
        await ConversationManager(handle).add_message(chat.conversation_id, person.user_id, "Voo local")
        clock.advance(days=31)
        await settled(handle)
        first = await PrivacyManager(handle).apply_retention()
        clock.advance(days=31)
        before = await snapshot(db)

        second = await PrivacyManager(handle).apply_retention()

    assert first.deleted == {RetentionKind.inactive_accounts: 1}
    assert second.deleted == {RetentionKind.inactive_accounts: 0}
    assert await snapshot(db) == before, "the tombstone is left alone: no second erasure, no audit row"
    assert await count_rows(db, "users") == 1
    assert await column(db, "conversations", "conversation_id") == {chat.conversation_id}, "held"


async def test_the_conversations_rule_ends_what_a_legal_hold_kept(db: Database, clock: ManualClock) -> None:
    async with retaining(
        db, clock, conversations=365, hold=frozenset({ErasableKind.conversations})
    ) as handle:
        person = await create_user(UserManager(handle))
        chat = await ConversationManager(handle).create_conversation(person.user_id, "Instrução")
        await PrivacyManager(handle).erase_user(person.user_id, "pedido do titular")
        clock.advance(days=366)

        report = await PrivacyManager(handle).apply_retention()

    assert report.deleted == {RetentionKind.conversations: 1}
    assert await count_rows(db, "conversations") == 0
    purge = (await AuditManager(db).query(record_id=chat.conversation_id, action="purge")).items
    assert len(purge) == 1


async def data_past_every_rule(handle: Database, clock: ManualClock) -> uuid.UUID:
    """Five of each kind past its retention (conversations and memories of a user who stays active, five users
    inactive for long); returns the active user."""
    users, memories, chats = UserManager(handle), MemoryManager(handle), ConversationManager(handle)
    keeper = await create_user(users)
    for index in range(5):
        await create_user(users)
        await chats.create_conversation(keeper.user_id, f"c{index}")
        await memories.store_memory(keeper.user_id, f"m{index}", "x", "long_term")
    clock.advance(days=400)
    await memories.store_memory(keeper.user_id, "recente", "y", "long_term")  # keeper active now
    await settled(handle)
    return keeper.user_id


async def test_batches_are_bounded_and_each_commits_on_its_own(db: Database, clock: ManualClock) -> None:
    async with retaining(db, clock, conversations=30, memories=30, accounts=365) as handle:
        keeper = await data_past_every_rule(handle, clock)
        calls: list[tuple[RetentionKind, int]] = []

        report = await PrivacyManager(handle).apply_retention(
            batch_size=2, on_progress=lambda kind, done: calls.append((kind, done))
        )

    assert calls == [
        (kind, done)
        for kind in (RetentionKind.conversations, RetentionKind.memories, RetentionKind.inactive_accounts)
        for done in (2, 4, 5)
    ]
    assert report.deleted == dict.fromkeys(RetentionKind, 5)
    assert await column(db, "users", "user_id") == {keeper}
    assert await count_rows(db, "conversations") == 0
    assert await owners_and_keys(db) == [(keeper, "recente")]
    trail = AuditManager(db)
    assert len((await trail.query(action="purge", table="conversations")).items) == 5
    assert len((await trail.query(action="purge", table="memory_entries")).items) == 3, "one per batch"
    assert len((await trail.query(action="erase")).items) == 5


async def test_a_run_stopped_half_way_keeps_its_batches_and_runs_again(
    db: Database, clock: ManualClock
) -> None:
    async with retaining(db, clock, conversations=30) as handle:
        await data_past_every_rule(handle, clock)

        def stop_at_the_second_batch(_kind: RetentionKind, done: int) -> None:
            if done > 2:
                raise RuntimeError("stopped")

        with pytest.raises(UnexpectedError, match="RuntimeError"):
            await PrivacyManager(handle).apply_retention(batch_size=2, on_progress=stop_at_the_second_batch)
        assert await count_rows(db, "conversations") == 1, "two batches committed, one left"

        again = await PrivacyManager(handle).apply_retention(batch_size=2)

    assert again.deleted == {RetentionKind.conversations: 1}
    assert await count_rows(db, "conversations") == 0
    assert len((await AuditManager(db).query(action="purge", table="conversations")).items) == 5


async def test_unset_rules_delete_nothing(db: Database, clock: ManualClock) -> None:
    async with retaining(db, clock) as handle:
        await data_past_every_rule(handle, clock)
        clock.advance(days=3650)
        before = await snapshot(db)
        calls: list[Any] = []

        report = await PrivacyManager(handle).apply_retention(on_progress=lambda *call: calls.append(call))

    assert (report.rules, report.deleted, report.messages, calls) == ((), {}, 0, [])
    assert await snapshot(db) == before


async def test_a_dry_run_counts_and_deletes_nothing(db: Database, clock: ManualClock) -> None:
    async with retaining(db, clock, conversations=30, memories=30, accounts=365) as handle:
        keeper = await data_past_every_rule(handle, clock)
        await ConversationManager(handle).add_message(
            (await ConversationManager(handle).create_conversation(keeper, "nova")).conversation_id,
            keeper,
            "oi",
        )
        before = await snapshot(db)
        calls: list[Any] = []

        dry = await PrivacyManager(handle).apply_retention(
            dry_run=True, on_progress=lambda *call: calls.append(call)
        )

        assert await snapshot(db) == before
        assert calls == []
        real = await PrivacyManager(handle).apply_retention()

    assert (dry.dry_run, real.dry_run) == (True, False)
    assert dry.deleted == real.deleted == dict.fromkeys(RetentionKind, 5)
    assert dry.messages == real.messages == 0
    assert dry.rules == real.rules


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an integer from 1 to 10000"),
        ({"batch_size": 10_001}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"batch_size": "2"}, "batch_size"),
        ({"dry_run": "yes"}, "dry_run must be true or false"),
        ({"dry_run": None}, "dry_run"),
        ({"on_progress": 42}, "on_progress must be a function"),
    ],
)
async def test_bad_input_deletes_nothing(
    db: Database, clock: ManualClock, arguments: dict[str, Any], match: str
) -> None:
    async with retaining(db, clock, conversations=30, memories=30, accounts=365) as handle:
        await data_past_every_rule(handle, clock)
        before = await snapshot(db)

        with pytest.raises(ValidationError, match=match):
            await PrivacyManager(handle).apply_retention(**arguments)

    assert await snapshot(db) == before


@pytest.mark.parametrize("value", ["-1", "36501", "um ano"])
def test_a_bad_retention_setting_is_refused_naming_it(value: str) -> None:
    with pytest.raises(ConfigurationError, match="STRATUS_RETENTION_MEMORIES_DAYS"):
        load_settings(STRATUS_RETENTION_MEMORIES_DAYS=value)
