"""import_messages: bulk history (COPY on PostgreSQL) with exact numbers and counters, one audit event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stratus_db import (
    AuditManager,
    ConflictError,
    ConversationManager,
    Database,
    NotFoundError,
    UserManager,
    ValidationError,
)
from tests.fixtures.factories import count_rows, create_user

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _history(count: int) -> list[dict[str, object]]:
    return [
        {
            "content": f"Mensagem histórica {n}: METAR SBGR {n:02d}1200Z 34006KT ✈️ 'aspas' -- ; DROP",
            "message_type": "agent_response" if n % 2 else "user_input",
            "agent_name": "meteorologia" if n % 2 else None,
            "metadata": {"origem": "sistema antigo", "n": n},
            "tokens_used": 7,
            "response_time": 0.5 if n % 2 else None,
            "created_at": START + timedelta(minutes=n),
        }
        for n in range(count)
    ]


@pytest.mark.parametrize("count", [3, 250])  # below and above the size from which PostgreSQL uses COPY
async def test_imports_in_order_after_existing_messages_with_exact_counters(
    db: Database, users: UserManager, conversations: ConversationManager, count: int
) -> None:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "migração")
    await conversations.add_message(conv.conversation_id, user.user_id, "já existia", tokens_used=5)
    history = _history(count)
    result = await conversations.import_messages(conv.conversation_id, user.user_id, history)
    assert (result.imported, result.first_seq, result.last_seq, result.total_tokens) == (
        count,
        2,
        count + 1,
        7 * count,
    )
    stored = await conversations.get_messages(conv.conversation_id, user.user_id, after_seq=1, limit=1000)
    assert [m.seq for m in stored] == list(range(2, count + 2))
    assert [
        (m.content, m.message_type, m.agent_name, m.metadata, m.response_time, m.created_at) for m in stored
    ] == [
        (
            item["content"],
            item["message_type"],
            item["agent_name"],
            item["metadata"],
            item["response_time"],
            item["created_at"],
        )
        for item in history
    ]
    conversation = await conversations.get_conversation(conv.conversation_id, user.user_id)
    assert conversation is not None
    assert (conversation.message_count, conversation.total_tokens) == (count + 1, 5 + 7 * count)
    follow_up = await conversations.add_message(conv.conversation_id, user.user_id, "depois da migração")
    assert follow_up.seq == count + 2
    events = (await AuditManager(db).query(record_id=conv.conversation_id, action="import")).items
    assert [event.new_values for event in events] == [
        {"imported": count, "first_seq": 2, "last_seq": count + 1, "total_tokens": 7 * count}
    ]
    assert await count_rows(db, "audit_log") == 5  # user, conversation, first message, the import, follow-up


async def test_an_import_without_times_is_stamped_now_and_tokens_are_estimated(
    users: UserManager, conversations: ConversationManager
) -> None:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "migração")
    result = await conversations.import_messages(conv.conversation_id, user.user_id, ({"content": "x" * 35},))
    assert result.total_tokens == 10
    (message,) = await conversations.get_messages(conv.conversation_id, user.user_id)
    assert message.created_at >= conv.created_at


async def test_an_empty_import_writes_nothing(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "migração")
    audit_rows = await count_rows(db, "audit_log")
    result = await conversations.import_messages(conv.conversation_id, user.user_id, [])
    assert (result.imported, result.first_seq, result.last_seq) == (0, None, None)
    assert await count_rows(db, "audit_log") == audit_rows


@pytest.mark.parametrize(
    ("messages", "complaint"),
    [
        ("texto", "iterable"),
        ({"content": "um só"}, "iterable"),
        (42, "iterable"),
        ([*_history(150), {"content": ""}], "messages.150.content"),
        ([{"content": "sem fuso", "created_at": datetime(2025, 1, 1)}], "timezone"),  # noqa: DTZ001
        (list(reversed(_history(3))), "messages.1.created_at is earlier"),
        ([{"content": "ok", "seq": 9}], "seq"),
    ],
)
async def test_bad_input_writes_nothing(
    db: Database, users: UserManager, conversations: ConversationManager, messages: object, complaint: str
) -> None:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "migração")
    with pytest.raises(ValidationError, match=complaint):
        await conversations.import_messages(conv.conversation_id, user.user_id, messages)  # type: ignore[arg-type]
    assert await count_rows(db, "messages") == 0
    stored = await conversations.get_conversation(conv.conversation_id, user.user_id)
    assert stored == conv


async def test_only_into_the_owners_active_conversation(
    db: Database, users: UserManager, conversations: ConversationManager
) -> None:
    user = await create_user(users)
    intruder = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "migração")
    with pytest.raises(NotFoundError, match="does not belong"):
        await conversations.import_messages(conv.conversation_id, intruder.user_id, _history(2))
    with pytest.raises(NotFoundError, match="does not belong"):
        await conversations.import_messages(conv.conversation_id, intruder.user_id, [])
    await conversations.archive_conversation(conv.conversation_id, user.user_id)
    with pytest.raises(ConflictError, match="archived"):
        await conversations.import_messages(conv.conversation_id, user.user_id, _history(200))
    assert await count_rows(db, "messages") == 0
