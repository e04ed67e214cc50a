"""Conversation lifecycle: update, archive (with packing), delete, restore and purge — on both backends."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from stratus_db import (
    AuditManager,
    ConflictError,
    ConversationManager,
    Database,
    NotFoundError,
    UserManager,
    ValidationError,
)
from stratus_db.conversations.schemas import Conversation
from stratus_db.models import MessageRow
from tests.fixtures.factories import count_rows, create_user


async def _conversation_with_messages(
    users: UserManager, conversations: ConversationManager, count: int = 3
) -> Conversation:
    user = await create_user(users)
    conv = await conversations.create_conversation(
        user.user_id, "Navegação SBKP–SBRP", {"aeronave": "PR-ABC"}
    )
    for n in range(count):
        await conversations.add_message(
            conv.conversation_id, user.user_id, f"METAR SBKP 141200Z 34006KT — mensagem número {n} ✈️"
        )
    stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
    assert stored is not None
    return stored


async def _actions(db: Database, record_id: uuid.UUID) -> list[tuple[str, object, object]]:
    events = (await AuditManager(db).query(record_id=record_id)).items
    return [(event.action, event.old_values, event.new_values) for event in reversed(events)]


async def _stored_bodies(db: Database, conversation_id: uuid.UUID) -> list[tuple[str | None, bytes | None]]:
    async with db.transaction(read_only=True) as conn:
        rows = await conn.execute(
            select(MessageRow.content, MessageRow.packed_content)
            .where(MessageRow.conversation_id == conversation_id)
            .order_by(MessageRow.seq)
        )
        return [(row.content, row.packed_content) for row in rows]


class TestUpdate:
    async def test_changes_title_and_context_and_audits_which_fields(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations, 0)
        updated = await conversations.update_conversation(
            conv.conversation_id, conv.user_id, title="Navegação revisada", context={"aeronave": "PR-XYZ"}
        )
        assert (updated.title, updated.context) == ("Navegação revisada", {"aeronave": "PR-XYZ"})
        assert await conversations.get_conversation(conv.conversation_id, conv.user_id) == updated
        assert (await _actions(db, conv.conversation_id))[-1] == (
            "update",
            None,
            {"changed": ["context", "title"]},
        )

    async def test_left_out_fields_keep_their_value_and_no_change_writes_nothing(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations, 0)
        updated = await conversations.update_conversation(conv.conversation_id, conv.user_id, title="Novo")
        assert updated.context == {"aeronave": "PR-ABC"}
        audit_rows = await count_rows(db, "audit_log")
        same = await conversations.update_conversation(conv.conversation_id, conv.user_id, title="Novo")
        assert same == updated
        assert await count_rows(db, "audit_log") == audit_rows

    @pytest.mark.parametrize(
        ("arguments", "complaint"),
        [
            ({}, "title or a context"),
            ({"title": ""}, "title"),
            ({"title": "x" * 501}, "title"),
            ({"context": ["lista"]}, "context"),
            ({"context": {"a": "b\x00"}}, "NUL"),
        ],
    )
    async def test_bad_input(
        self,
        db: Database,
        users: UserManager,
        conversations: ConversationManager,
        arguments: dict[str, object],
        complaint: str,
    ) -> None:
        conv = await _conversation_with_messages(users, conversations, 0)
        with pytest.raises(ValidationError, match=complaint):
            await conversations.update_conversation(conv.conversation_id, conv.user_id, **arguments)  # type: ignore[arg-type]
        assert await conversations.get_conversation(conv.conversation_id, conv.user_id) == conv

    async def test_a_deleted_conversation_cannot_be_changed(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations, 0)
        await conversations.delete_conversation(conv.conversation_id, conv.user_id)
        with pytest.raises(ConflictError, match="restore"):
            await conversations.update_conversation(conv.conversation_id, conv.user_id, title="x")


class TestArchive:
    async def test_archived_conversations_refuse_messages_and_stay_listed(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations)
        archived = await conversations.archive_conversation(conv.conversation_id, conv.user_id)
        assert archived.status == "archived"
        with pytest.raises(ConflictError, match="archived"):
            await conversations.add_message(conv.conversation_id, conv.user_id, "mais uma")
        listed = (await conversations.list_conversations(conv.user_id)).items
        assert [item.conversation_id for item in listed] == [conv.conversation_id]
        assert (await _actions(db, conv.conversation_id))[-1] == (
            "archive",
            {"status": "active"},
            {"status": "archived", "packed_messages": 3},
        )

    async def test_packing_compresses_bodies_and_reads_stay_transparent(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations)
        before = await conversations.get_messages(conv.conversation_id, conv.user_id)
        await conversations.archive_conversation(conv.conversation_id, conv.user_id, pack=True)
        stored = await _stored_bodies(db, conv.conversation_id)
        assert all(content is None and packed for content, packed in stored)
        assert await conversations.get_messages(conv.conversation_id, conv.user_id) == before
        window = await conversations.get_context(conv.conversation_id, conv.user_id, 10_000)
        assert window.messages == before

    async def test_without_packing_bodies_stay_plain_and_a_second_archive_packs_them(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations)
        await conversations.archive_conversation(conv.conversation_id, conv.user_id, pack=False)
        assert all(
            content and packed is None for content, packed in await _stored_bodies(db, conv.conversation_id)
        )
        audit_rows = await count_rows(db, "audit_log")
        await conversations.archive_conversation(conv.conversation_id, conv.user_id, pack=False)
        assert await count_rows(db, "audit_log") == audit_rows  # nothing changed, nothing audited
        await conversations.archive_conversation(conv.conversation_id, conv.user_id, pack=True)
        assert all(content is None for content, _ in await _stored_bodies(db, conv.conversation_id))

    async def test_a_deleted_conversation_cannot_be_archived(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations, 0)
        await conversations.delete_conversation(conv.conversation_id, conv.user_id)
        with pytest.raises(ConflictError, match="deleted"):
            await conversations.archive_conversation(conv.conversation_id, conv.user_id)

    async def test_bad_pack_argument(self, users: UserManager, conversations: ConversationManager) -> None:
        conv = await _conversation_with_messages(users, conversations, 0)
        with pytest.raises(ValidationError, match="pack"):
            await conversations.archive_conversation(conv.conversation_id, conv.user_id, pack="yes")  # type: ignore[arg-type]


class TestDeleteAndRestore:
    async def test_deleted_is_hidden_and_restorable(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations)
        deleted = await conversations.delete_conversation(conv.conversation_id, conv.user_id)
        assert deleted.status == "deleted"
        assert (await conversations.list_conversations(conv.user_id)).items == []
        assert [
            c.conversation_id
            for c in (await conversations.list_conversations(conv.user_id, status="deleted")).items
        ] == [conv.conversation_id]
        with pytest.raises(ConflictError, match="deleted"):
            await conversations.add_message(conv.conversation_id, conv.user_id, "oi")
        restored = await conversations.restore_conversation(conv.conversation_id, conv.user_id)
        assert restored.status == "active"
        message = await conversations.add_message(conv.conversation_id, conv.user_id, "de volta")
        assert message.seq == 4
        assert [action for action, _, _ in await _actions(db, conv.conversation_id)] == [
            "create",
            "delete",
            "restore",
        ]

    async def test_restoring_an_archived_packed_conversation_keeps_its_messages_readable(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations)
        before = await conversations.get_messages(conv.conversation_id, conv.user_id)
        await conversations.archive_conversation(conv.conversation_id, conv.user_id, pack=True)
        await conversations.restore_conversation(conv.conversation_id, conv.user_id)
        await conversations.add_message(conv.conversation_id, conv.user_id, "nova pergunta")
        after = await conversations.get_messages(conv.conversation_id, conv.user_id)
        assert after[:3] == before
        assert after[3].content == "nova pergunta"

    async def test_repeating_a_transition_changes_nothing(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations, 0)
        await conversations.delete_conversation(conv.conversation_id, conv.user_id)
        audit_rows = await count_rows(db, "audit_log")
        await conversations.delete_conversation(conv.conversation_id, conv.user_id)
        await conversations.restore_conversation(conv.conversation_id, conv.user_id)
        await conversations.restore_conversation(conv.conversation_id, conv.user_id)
        assert await count_rows(db, "audit_log") == audit_rows + 1


class TestPurge:
    async def test_removes_the_conversation_and_its_messages_and_audits_counts_only(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conv = await _conversation_with_messages(users, conversations)
        other = await conversations.create_conversation(conv.user_id, "outra")
        await conversations.add_message(other.conversation_id, conv.user_id, "fica")
        await conversations.archive_conversation(conv.conversation_id, conv.user_id, pack=True)
        assert await conversations.purge_conversation(conv.conversation_id, conv.user_id) == 3
        assert await conversations.get_conversation(conv.conversation_id, conv.user_id) is None
        assert await count_rows(db, "messages") == 1
        with pytest.raises(NotFoundError):
            await conversations.get_messages(conv.conversation_id, conv.user_id)
        action, old_values, new_values = (await _actions(db, conv.conversation_id))[-1]
        assert (action, new_values) == ("purge", None)
        assert old_values == {"status": "archived", "message_count": 3, "total_tokens": conv.total_tokens}
        assert "Navegação" not in str(await _actions(db, conv.conversation_id))


@pytest.mark.parametrize("operation", ["archive", "delete", "restore", "purge", "update"])
async def test_another_users_conversation_is_not_found_and_untouched(
    db: Database, users: UserManager, conversations: ConversationManager, operation: str
) -> None:
    conv = await _conversation_with_messages(users, conversations, 1)
    intruder = await create_user(users)
    audit_rows = await count_rows(db, "audit_log")
    call = getattr(conversations, f"{operation}_conversation")
    arguments = {"title": "x"} if operation == "update" else {}
    with pytest.raises(NotFoundError, match="does not belong"):
        await call(conv.conversation_id, intruder.user_id, **arguments)
    with pytest.raises(NotFoundError):
        await call(uuid.uuid4(), conv.user_id, **arguments)
    with pytest.raises(ValidationError, match="conversation_id"):
        await call("not-a-uuid", conv.user_id, **arguments)
    assert await conversations.get_conversation(conv.conversation_id, conv.user_id) == conv
    assert await count_rows(db, "audit_log") == audit_rows
