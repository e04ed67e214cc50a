"""Hostile and extreme arguments: each is a ValidationError naming the argument, raised before any SQL, and nothing is
written. Never a RecursionError, an OverflowError or an unnamed DatabaseError, and never a silent conversion
(bytes are not text, True is not 1, a string is not a datetime)."""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratus_db import (
    AuditManager,
    ConversationManager,
    Database,
    MemoryManager,
    UserManager,
    ValidationError,
)
from stratus_db.kit.schemas import decode_cursor, encode_cursor
from tests.fixtures.databases import TABLES
from tests.fixtures.factories import count_rows, create_user

# Typed as Any: the wrong types a caller without a type checker passes.
BYTES: Any = b"hi"
BYTEARRAY: Any = bytearray(b"hi")
TRUE: Any = True

WEST = timezone(-timedelta(hours=12))
EAST = timezone(timedelta(hours=14))
LAST_HOUR_WEST = datetime(9999, 12, 31, 23, 0, tzinfo=WEST)
"""Year 10000 once in UTC."""
FIRST_HOUR_EAST = datetime(1, 1, 1, 1, 0, tzinfo=EAST)
"""Year 0 once in UTC."""
FIRST_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class World:
    """A user with a conversation (one message) and a memory, and the managers to call."""

    users: UserManager
    memories: MemoryManager
    conversations: ConversationManager
    audit: AuditManager
    user_id: uuid.UUID
    conversation_id: uuid.UUID


@pytest.fixture
async def world(
    users: UserManager, memories: MemoryManager, conversations: ConversationManager, audit: AuditManager
) -> World:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "Consulta")
    await conversations.add_message(conv.conversation_id, user.user_id, "Qual o METAR de SBGR?")
    await memories.store_memory(user.user_id, "preferred_aircraft", "Cessna 172")
    return World(users, memories, conversations, audit, user.user_id, conv.conversation_id)


async def row_counts(db: Database) -> dict[str, int]:
    return {table: await count_rows(db, table) for table in TABLES}


Call = Callable[[World], Awaitable[object]]


async def assert_refused(db: Database, world: World, call: Call, argument: str) -> None:
    before = await row_counts(db)
    with pytest.raises(ValidationError) as caught:
        await call(world)
    assert argument in caught.value.message
    assert await row_counts(db) == before


def raw_cursor(json_text: bytes) -> str:
    """A cursor as a client could forge one: any JSON, encoded as this API encodes its own."""
    return base64.urlsafe_b64encode(json_text).decode().rstrip("=")


def nested_brackets(depth: int) -> str:
    """`depth` nested JSON arrays: json.loads recurses once per level."""
    return raw_cursor(b"[" * depth + b"]" * depth)


# Deeper than Python's recursion limit, and still a short cursor (4,000 characters).
DEEP = nested_brackets(1_500)
TOO_LONG = encode_cursor("k" * 10_000)


class TestCursors:
    @pytest.mark.parametrize(
        "call",
        [
            pytest.param(lambda w: w.users.list_users(cursor=DEEP), id="list_users"),
            pytest.param(
                lambda w: w.conversations.list_conversations(w.user_id, cursor=DEEP), id="conversations"
            ),
            pytest.param(lambda w: w.memories.list_memories(w.user_id, cursor=DEEP), id="memories"),
            pytest.param(lambda w: w.audit.query(cursor=DEEP), id="audit"),
        ],
    )
    async def test_nested_brackets_are_not_a_cursor(self, db: Database, world: World, call: Call) -> None:
        await assert_refused(db, world, call, "cursor")

    @pytest.mark.parametrize("json_text", [b"[[]]", b"[{}]", b"[null]"], ids=["list", "object", "null"])
    async def test_a_cursor_whose_parts_are_not_text_is_refused(
        self, db: Database, world: World, json_text: bytes
    ) -> None:
        cursor = raw_cursor(json_text)
        await assert_refused(
            db, world, lambda w: w.memories.list_memories(w.user_id, cursor=cursor), "cursor"
        )

    async def test_a_cursor_longer_than_any_issued_is_refused(self, db: Database, world: World) -> None:
        await assert_refused(
            db, world, lambda w: w.memories.list_memories(w.user_id, cursor=TOO_LONG), "cursor"
        )

    @pytest.mark.parametrize("instant", [LAST_HOUR_WEST, FIRST_HOUR_EAST], ids=["year-10000", "year-0"])
    @pytest.mark.parametrize("list_", ["conversations", "audit"])
    async def test_a_cursor_time_beyond_the_calendar_in_utc_is_refused(
        self, db: Database, world: World, instant: datetime, list_: str
    ) -> None:
        cursor = encode_cursor(instant.isoformat(), uuid.uuid4())
        call: Call = (
            (lambda w: w.conversations.list_conversations(w.user_id, cursor=cursor))
            if list_ == "conversations"
            else (lambda w: w.audit.query(cursor=cursor))
        )
        await assert_refused(db, world, call, "cursor")

    async def test_a_cursor_at_the_ends_of_the_calendar_is_a_page(self, world: World) -> None:
        for instant in (FIRST_INSTANT, LAST_INSTANT):
            cursor = encode_cursor(instant.isoformat(), uuid.uuid4())
            assert (await world.audit.query(cursor=cursor)).next_cursor is None
            await world.conversations.list_conversations(world.user_id, cursor=cursor)


_cursor_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
)


@given(st.one_of(st.text(), _cursor_json.map(lambda value: encode_cursor(value)), st.integers(1, 3_000)))
def test_decode_cursor_answers_anything_with_a_value_or_a_validation_error(cursor: str | int) -> None:
    if isinstance(cursor, int):
        cursor = nested_brackets(cursor)
    with contextlib.suppress(ValidationError):
        decode_cursor(cursor, (str,))


class TestTimestamps:
    @pytest.mark.parametrize(
        ("call", "argument"),
        [
            pytest.param(
                lambda w: w.memories.store_memory(w.user_id, "k", 1, expires_at=LAST_HOUR_WEST),
                "expires_at",
                id="store_memory-year-10000",
            ),
            pytest.param(
                lambda w: w.memories.store_memory(w.user_id, "k", 1, expires_at="2099-01-01T00:00:00+00:00"),
                "expires_at",
                id="store_memory-text",
            ),
            pytest.param(
                lambda w: w.conversations.import_messages(
                    w.conversation_id, w.user_id, [{"content": "oi", "created_at": LAST_HOUR_WEST}]
                ),
                "messages.0.created_at",
                id="import-year-10000",
            ),
            pytest.param(
                lambda w: w.conversations.import_messages(
                    w.conversation_id, w.user_id, [{"content": "oi", "created_at": FIRST_HOUR_EAST}]
                ),
                "messages.0.created_at",
                id="import-year-0",
            ),
            pytest.param(
                lambda w: w.conversations.import_messages(
                    w.conversation_id, w.user_id, [{"content": "oi", "created_at": 0}]
                ),
                "messages.0.created_at",
                id="import-number",
            ),
            pytest.param(
                lambda w: w.conversations.get_usage_stats(w.user_id, since=LAST_HOUR_WEST),
                "since",
                id="usage-since-year-10000",
            ),
            pytest.param(
                lambda w: w.conversations.get_usage_stats(w.user_id, until=FIRST_HOUR_EAST),
                "until",
                id="usage-until-year-0",
            ),
            pytest.param(
                lambda w: w.conversations.get_usage_stats(w.user_id, since="2026-01-01T00:00:00Z"),
                "since",
                id="usage-since-text",
            ),
            pytest.param(lambda w: w.audit.query(since=LAST_HOUR_WEST), "since", id="audit-since-year-10000"),
            pytest.param(lambda w: w.audit.query(until=FIRST_HOUR_EAST), "until", id="audit-until-year-0"),
            pytest.param(lambda w: w.audit.query(until=1_700_000_000), "until", id="audit-until-number"),
        ],
    )
    async def test_a_time_beyond_the_calendar_or_not_a_datetime_is_refused(
        self, db: Database, world: World, call: Call, argument: str
    ) -> None:
        await assert_refused(db, world, call, argument)

    async def test_the_ends_of_the_calendar_are_stored_and_counted(self, world: World) -> None:
        w = world
        await w.conversations.import_messages(
            w.conversation_id,
            w.user_id,
            [
                {"content": "primeira", "created_at": FIRST_INSTANT},
                {"content": "última", "created_at": LAST_INSTANT},
            ],
        )
        usage = await w.conversations.get_usage_stats(w.user_id, since=FIRST_INSTANT)
        days = {day.day: day.messages for day in usage.per_day}
        assert days[date(1, 1, 1)] == 1
        assert days[date(9999, 12, 31)] == 1
        memory = await w.memories.store_memory(
            w.user_id, "k", 1, expires_at=LAST_HOUR_WEST.replace(tzinfo=EAST)
        )
        assert memory.expires_at == LAST_HOUR_WEST.replace(tzinfo=EAST)
        read = await w.memories.get_memory(w.user_id, "k")
        assert read is not None
        assert read.expires_at == memory.expires_at


class TestIntegers:
    @pytest.mark.parametrize(
        ("call", "argument"),
        [
            pytest.param(
                lambda w: w.conversations.get_messages(w.conversation_id, w.user_id, before_seq=2**70),
                "before_seq",
                id="before_seq-2**70",
            ),
            pytest.param(
                lambda w: w.conversations.get_messages(w.conversation_id, w.user_id, after_seq=2**70),
                "after_seq",
                id="after_seq-2**70",
            ),
            pytest.param(
                lambda w: w.conversations.get_messages(w.conversation_id, w.user_id, after_seq=INT32_MAX + 1),
                "after_seq",
                id="after_seq-beyond-int32",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, "oi", tokens_used=TRUE),
                "tokens_used",
                id="tokens_used-bool",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, "oi", tokens_used="30"),
                "tokens_used",
                id="tokens_used-text",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, "oi", tokens_used=30.0),
                "tokens_used",
                id="tokens_used-float",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, "oi", response_time=TRUE),
                "response_time",
                id="response_time-bool",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(
                    w.conversation_id, w.user_id, "oi", response_time="1.5"
                ),
                "response_time",
                id="response_time-text",
            ),
            pytest.param(
                lambda w: w.conversations.add_messages(
                    w.conversation_id, w.user_id, [{"content": "oi", "tokens_used": True}]
                ),
                "messages.0.tokens_used",
                id="add_messages-tokens_used-bool",
            ),
            pytest.param(
                lambda w: w.conversations.search_messages(w.user_id, "METAR", limit=TRUE),
                "limit",
                id="search_messages-limit-bool",
            ),
            pytest.param(
                lambda w: w.memories.search_memories(w.user_id, "Cessna", limit=TRUE),
                "limit",
                id="search_memories-limit-bool",
            ),
            pytest.param(
                lambda w: w.memories.search_memories(w.user_id, "Cessna", min_importance=TRUE),
                "min_importance",
                id="search_memories-min_importance-bool",
            ),
            pytest.param(
                lambda w: w.memories.store_memory(w.user_id, "k", 1, importance_score=TRUE),
                "importance_score",
                id="store_memory-importance-bool",
            ),
            pytest.param(
                lambda w: w.memories.store_memory(w.user_id, "k", 1, ttl=TRUE),
                "ttl",
                id="store_memory-ttl-bool",
            ),
            pytest.param(
                lambda w: w.memories.purge_expired(batch_size=0), "batch_size", id="purge-batch_size"
            ),
        ],
    )
    async def test_an_integer_out_of_its_column_or_of_another_type_is_refused(
        self, db: Database, world: World, call: Call, argument: str
    ) -> None:
        await assert_refused(db, world, call, argument)

    async def test_the_largest_sequence_numbers_are_bounds(self, world: World) -> None:
        w = world
        assert await w.conversations.get_messages(w.conversation_id, w.user_id, after_seq=INT32_MAX) == []
        older = await w.conversations.get_messages(w.conversation_id, w.user_id, before_seq=INT32_MAX)
        assert [message.seq for message in older] == [1]


class TestText:
    @pytest.mark.parametrize(
        ("call", "argument"),
        [
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, BYTES),
                "content",
                id="content",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, BYTEARRAY),
                "content",
                id="content-bytearray",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, "oi", agent_name=BYTES),
                "agent_name",
                id="agent_name",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(
                    w.conversation_id, w.user_id, "oi", message_type=b"system"
                ),
                "message_type",
                id="message_type",
            ),
            pytest.param(
                lambda w: w.conversations.add_message(w.conversation_id, w.user_id, "oi", metadata={b"k": 1}),
                "metadata",
                id="metadata-key",
            ),
            pytest.param(
                lambda w: w.conversations.add_messages(w.conversation_id, w.user_id, [{"content": BYTES}]),
                "messages.0.content",
                id="add_messages-content",
            ),
            pytest.param(
                lambda w: w.conversations.import_messages(w.conversation_id, w.user_id, [{"content": BYTES}]),
                "messages.0.content",
                id="import_messages-content",
            ),
            pytest.param(
                lambda w: w.conversations.create_conversation(w.user_id, BYTES), "title", id="title"
            ),
            pytest.param(
                lambda w: w.conversations.create_conversation(w.user_id, "t", {"a": {b"k": 1}}),
                "context",
                id="context-nested-key",
            ),
            pytest.param(
                lambda w: w.conversations.update_conversation(w.conversation_id, w.user_id, title=BYTES),
                "title",
                id="update-title",
            ),
            pytest.param(
                lambda w: w.users.create_user(name=BYTES, email="ana@aeroclube.com.br", role="pilot"),
                "name",
                id="user-name",
            ),
            pytest.param(
                lambda w: w.users.create_user(name="Ana", email=b"ana@aeroclube.com.br", role="pilot"),
                "email",
                id="user-email",
            ),
            pytest.param(
                lambda w: w.users.create_user(name="Ana", email="ana@aeroclube.com.br", role=b"pilot"),
                "role",
                id="user-role",
            ),
            pytest.param(
                lambda w: w.users.create_user(
                    name="Ana", email="ana@aeroclube.com.br", role="pilot", licenses=[b"PP"]
                ),
                "licenses.0",
                id="user-licence",
            ),
            pytest.param(
                lambda w: w.users.create_user(
                    name="Ana", email="ana@aeroclube.com.br", role="pilot", experience_level=BYTES
                ),
                "experience_level",
                id="user-experience_level",
            ),
            pytest.param(
                lambda w: w.users.create_user(
                    name="Ana", email="ana@aeroclube.com.br", role="pilot", preferences={b"k": 1}
                ),
                "preferences",
                id="user-preferences-key",
            ),
            pytest.param(lambda w: w.users.update_user(w.user_id, name=BYTES), "name", id="update_user-name"),
            pytest.param(
                lambda w: w.users.get_user_by_email(b"maria@aeroclube.com.br"),
                "email",
                id="get_user_by_email",
            ),
            pytest.param(lambda w: w.memories.store_memory(w.user_id, BYTES, 1), "key", id="memory-key"),
            pytest.param(
                lambda w: w.memories.store_memory(w.user_id, "k", 1, memory_type=b"critical"),
                "memory_type",
                id="memory-type",
            ),
            pytest.param(
                lambda w: w.memories.store_memory(w.user_id, "k", {b"k": 1}), "value", id="memory-value-key"
            ),
            pytest.param(lambda w: w.memories.get_memory(w.user_id, BYTES), "key", id="get_memory-key"),
            pytest.param(lambda w: w.memories.delete_memory(w.user_id, BYTES), "key", id="delete_memory-key"),
            pytest.param(lambda w: w.audit.query(table=BYTES), "table", id="audit-table"),
        ],
    )
    async def test_bytes_are_not_text(self, db: Database, world: World, call: Call, argument: str) -> None:
        await assert_refused(db, world, call, argument)

    @pytest.mark.parametrize("field", ["trace_id", "ip_address", "user_agent", "purpose"])
    async def test_bytes_are_not_text_in_the_request_context(self, db: Database, field: str) -> None:
        given: dict[str, Any] = {field: b"127.0.0.1"}
        with pytest.raises(ValidationError, match=field):
            async with db.context(**given):
                pass
