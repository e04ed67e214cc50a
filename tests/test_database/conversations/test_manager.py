from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from stratus_db import (
    AuditManager,
    ConflictError,
    ConversationManager,
    Database,
    NotFoundError,
    UserManager,
    ValidationError,
)
from stratus_db.kit.tokens import estimate_tokens
from stratus_db.models import ConversationRow, MessageRow
from tests.fixtures.factories import count_rows, create_user


async def _set_status(db: Database, conversation_id: uuid.UUID, status: str) -> None:
    async with db.transaction() as conn:
        await conn.execute(
            update(ConversationRow)
            .where(ConversationRow.conversation_id == conversation_id)
            .values(status=status)
        )


class TestCreateConversation:
    async def test_creates_an_active_empty_conversation(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(
            user.user_id, "Consulta meteorológica", {"aeronave": "PR-XYZ"}
        )
        assert (conv.title, conv.status, conv.message_count, conv.total_tokens) == (
            "Consulta meteorológica",
            "active",
            0,
            0,
        )
        assert conv.context == {"aeronave": "PR-XYZ"}
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored == conv
        events = (await AuditManager(db).query(record_id=conv.conversation_id)).items
        assert [(e.action, e.table_name) for e in events] == [("create", "conversations")]

    async def test_unknown_user_is_not_found_and_nothing_is_written(
        self, db: Database, conversations: ConversationManager
    ) -> None:
        with pytest.raises(NotFoundError, match="does not exist"):
            await conversations.create_conversation(uuid.uuid4(), "t")
        assert await count_rows(db, "conversations") == 0
        assert await count_rows(db, "audit_log") == 0

    @pytest.mark.parametrize(
        ("arguments", "complaint"),
        [
            ({"title": "   "}, "title"),
            ({"title": "t" * 501}, "title"),
            ({"title": "a\x00"}, "NUL"),
            ({"context": {"k": float("nan")}}, "NaN"),
            ({"context": {"k": "\x00"}}, "NUL"),
            ({"user_id": 42}, "user_id"),
        ],
    )
    async def test_bad_input(
        self,
        db: Database,
        users: UserManager,
        conversations: ConversationManager,
        arguments: dict[str, Any],
        complaint: str,
    ) -> None:
        user = await create_user(users)
        with pytest.raises(ValidationError, match=complaint):
            await conversations.create_conversation(**({"user_id": user.user_id} | arguments))
        assert await count_rows(db, "conversations") == 0
        assert await count_rows(db, "audit_log") == 1  # the user's creation only

    async def test_another_users_conversation_is_invisible(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        other = await create_user(users)
        conv = await conversations.create_conversation(owner.user_id, "t")
        assert await conversations.get_conversation(conv.conversation_id, other.user_id) is None


class TestAddMessage:
    async def test_appends_with_sequence_numbers_and_counters(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "Navegação SBKP–SBRP")
        first = await conversations.add_message(conv.conversation_id, user.user_id, "Qual o METAR de SBGR?")
        second = await conversations.add_message(
            conv.conversation_id,
            user.user_id,
            "METAR SBGR 251200Z 33008KT 9999 FEW035 27/17 Q1016=",
            "agent_response",
            agent_name="meteorologia",
            metadata={"fonte": "REDEMET"},
            tokens_used=30,
            response_time=1.5,
        )
        assert (first.seq, second.seq) == (1, 2)
        assert first.tokens_used == estimate_tokens("Qual o METAR de SBGR?")
        assert (second.agent_name, second.metadata, second.response_time) == (
            "meteorologia",
            {"fonte": "REDEMET"},
            1.5,
        )
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (2, first.tokens_used + 30)
        assert stored.last_activity_at == second.created_at > first.created_at
        assert await count_rows(db, "messages") == 2

    async def test_concurrent_appends_get_distinct_gap_free_numbers(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        appended = await asyncio.gather(
            *(
                conversations.add_message(conv.conversation_id, user.user_id, f"mensagem {n}", tokens_used=2)
                for n in range(60)
            )
        )
        assert sorted(message.seq for message in appended) == list(range(1, 61))
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        assert (stored.message_count, stored.total_tokens) == (60, 120)

    @pytest.mark.parametrize(
        ("arguments", "complaint"),
        [
            ({"content": ""}, "content"),
            ({"content": " \n\t "}, "content"),
            ({"content": "oi\x00"}, "NUL"),
            ({"message_type": "shout"}, "message_type"),
            ({"agent_name": "meteorologia; DROP TABLE messages"}, "agent_name"),
            ({"tokens_used": -1}, "tokens_used"),
            ({"response_time": float("inf")}, "response_time"),
            ({"metadata": ["not", "an", "object"]}, "metadata"),
            ({"metadata": {"fonte": "RED\x00EMET"}}, "NUL"),
            ({"user_id": "42"}, "user_id"),
            ({"conversation_id": "abc"}, "conversation_id"),
        ],
    )
    async def test_bad_input_is_rejected_and_nothing_is_written(
        self,
        db: Database,
        users: UserManager,
        conversations: ConversationManager,
        arguments: dict[str, Any],
        complaint: str,
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        call: dict[str, Any] = {
            "conversation_id": conv.conversation_id,
            "user_id": user.user_id,
            "content": "oi",
        }
        audit_rows = await count_rows(db, "audit_log")
        with pytest.raises(ValidationError, match=complaint):
            await conversations.add_message(**(call | arguments))
        assert await count_rows(db, "messages") == 0
        assert await count_rows(db, "audit_log") == audit_rows
        stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
        assert stored is not None
        assert stored.message_count == 0

    async def test_unknown_conversation_is_not_found(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        with pytest.raises(NotFoundError, match="does not exist or does not belong"):
            await conversations.add_message(uuid.uuid4(), user.user_id, "oi")
        assert await count_rows(db, "messages") == 0
        assert await count_rows(db, "audit_log") == 1

    async def test_an_unknown_user_is_not_found(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        with pytest.raises(NotFoundError, match="does not exist or does not belong"):
            await conversations.add_message(conv.conversation_id, uuid.uuid4(), "oi")
        assert await count_rows(db, "messages") == 0
        assert await count_rows(db, "audit_log") == 2

    async def test_a_user_cannot_append_to_another_users_conversation(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        intruder = await create_user(users)
        conv = await conversations.create_conversation(owner.user_id, "t")
        with pytest.raises(NotFoundError):
            await conversations.add_message(conv.conversation_id, intruder.user_id, "oi")
        assert await count_rows(db, "messages") == 0
        stored = await conversations.get_conversation(conv.conversation_id, owner.user_id)
        assert stored is not None
        assert stored.message_count == 0

    @pytest.mark.parametrize("status", ["archived", "deleted"])
    async def test_an_inactive_conversation_refuses_messages(
        self, db: Database, users: UserManager, conversations: ConversationManager, status: str
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        await _set_status(db, conv.conversation_id, status)
        with pytest.raises(ConflictError, match=f"is {status}"):
            await conversations.add_message(conv.conversation_id, user.user_id, "oi")
        assert await count_rows(db, "messages") == 0

    async def test_hostile_text_is_stored_verbatim(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        content = "'; DELETE FROM messages; -- \" \\ 🛩️ ção " + "x" * 20_000
        message = await conversations.add_message(conv.conversation_id, user.user_id, content)
        async with db.transaction(read_only=True) as conn:
            stored = (
                await conn.execute(
                    select(MessageRow.content).where(MessageRow.message_id == message.message_id)
                )
            ).scalar_one()
        assert stored == content


class TestGetMessages:
    async def _conversation_with(
        self, users: UserManager, conversations: ConversationManager, count: int
    ) -> tuple[uuid.UUID, uuid.UUID]:
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "t")
        for n in range(1, count + 1):
            await conversations.add_message(conv.conversation_id, user.user_id, f"m{n}")
        return conv.conversation_id, user.user_id

    async def test_reads_in_sequence_order_forwards_and_backwards(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conversation_id, user_id = await self._conversation_with(users, conversations, 10)
        assert [m.seq for m in await conversations.get_messages(conversation_id, user_id)] == list(
            range(1, 11)
        )
        assert [
            m.seq for m in await conversations.get_messages(conversation_id, user_id, limit=3, after_seq=4)
        ] == [5, 6, 7]
        assert [
            m.seq for m in await conversations.get_messages(conversation_id, user_id, limit=3, before_seq=11)
        ] == [8, 9, 10]
        assert [
            m.content
            for m in await conversations.get_messages(conversation_id, user_id, after_seq=2, before_seq=5)
        ] == [
            "m3",
            "m4",
        ]
        assert await conversations.get_messages(conversation_id, user_id, after_seq=10) == []

    async def test_another_users_messages_are_not_found(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conversation_id, _owner = await self._conversation_with(users, conversations, 2)
        other = await create_user(users)
        with pytest.raises(NotFoundError):
            await conversations.get_messages(conversation_id, other.user_id)

    @pytest.mark.parametrize(
        "arguments", [{"limit": 0}, {"limit": 1001}, {"after_seq": -1}, {"before_seq": "3"}]
    )
    async def test_bad_bounds(
        self, users: UserManager, conversations: ConversationManager, arguments: dict[str, Any]
    ) -> None:
        conversation_id, user_id = await self._conversation_with(users, conversations, 1)
        with pytest.raises(ValidationError):
            await conversations.get_messages(conversation_id, user_id, **arguments)


class TestListConversations:
    async def test_most_recent_activity_first_across_pages(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        user = await create_user(users)
        created = [await conversations.create_conversation(user.user_id, f"c{n}") for n in range(5)]
        await conversations.add_message(created[1].conversation_id, user.user_id, "retomando")
        await _set_status(db, created[3].conversation_id, "deleted")

        titles: list[str | None] = []
        cursor: str | None = None
        while True:
            page = await conversations.list_conversations(user.user_id, limit=2, cursor=cursor)
            titles += [conv.title for conv in page.items]
            if (cursor := page.next_cursor) is None:
                break
        assert titles == ["c1", "c4", "c2", "c0"]
        deleted = await conversations.list_conversations(user.user_id, status="deleted")
        assert [conv.title for conv in deleted.items] == ["c3"]

    async def test_only_the_owners_conversations(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        owner = await create_user(users)
        other = await create_user(users)
        await conversations.create_conversation(owner.user_id, "mine")
        assert (await conversations.list_conversations(other.user_id)).items == []

    @pytest.mark.parametrize("arguments", [{"status": "lost"}, {"cursor": "eyJ4Ijox"}, {"limit": True}])
    async def test_bad_arguments(
        self, users: UserManager, conversations: ConversationManager, arguments: dict[str, Any]
    ) -> None:
        user = await create_user(users)
        with pytest.raises(ValidationError):
            await conversations.list_conversations(user.user_id, **arguments)


@pytest.mark.parametrize("bad_id", ["42", "'; DROP TABLE conversations; --", "", "\x00"])
@pytest.mark.parametrize(
    "call",
    ["add_message", "get_conversation", "get_messages", "list_conversations", "create_conversation"],
)
async def test_a_non_uuid_user_id_is_refused_everywhere(
    db: Database, users: UserManager, conversations: ConversationManager, call: str, bad_id: str
) -> None:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "t")
    calls: dict[str, dict[str, Any]] = {
        "add_message": {"conversation_id": conv.conversation_id, "user_id": bad_id, "content": "oi"},
        "get_conversation": {"conversation_id": conv.conversation_id, "user_id": bad_id},
        "get_messages": {"conversation_id": conv.conversation_id, "user_id": bad_id},
        "list_conversations": {"user_id": bad_id},
        "create_conversation": {"user_id": bad_id, "title": "t"},
    }
    arguments = calls[call]
    with pytest.raises(ValidationError, match="user_id"):
        await getattr(conversations, call)(**arguments)
    assert await count_rows(db, "conversations") == 1
    assert await count_rows(db, "messages") == 0
    assert await count_rows(db, "audit_log") == 2
