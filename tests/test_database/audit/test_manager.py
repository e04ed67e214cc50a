"""AuditManager.query on both backends, and the audit row every write leaves (or, when it fails, does not leave)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db import (
    AuditEvent,
    AuditManager,
    ConflictError,
    ConversationManager,
    Database,
    MemoryManager,
    Principal,
    PrincipalKind,
    UserManager,
    UserRead,
    ValidationError,
)
from stratus_db.audit.repository import AuditRepository
from stratus_db.kit.schemas import encode_cursor
from stratus_db.models.audit import APART_FROM_APPENDS
from tests.fixtures.factories import count_rows, create_user

BRASILIA = timezone(timedelta(hours=-3))
SECRET_CONTENT = "Meu código de reserva é XK-4471 e minha senha é hunter2"


async def only_event(audit: AuditManager, **filters: Any) -> AuditEvent:
    """The one audit row matching `filters`; fails if there are none or several."""
    page = await audit.query(**filters)
    assert len(page.items) == 1, page.items
    assert page.next_cursor is None
    return page.items[0]


async def all_events(audit: AuditManager, *, limit: int, **filters: Any) -> list[list[AuditEvent]]:
    """Every page of the query, following `next_cursor` to the end."""
    pages: list[list[AuditEvent]] = []
    cursor: str | None = None
    while True:
        page = await audit.query(limit=limit, cursor=cursor, **filters)
        pages.append(page.items)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def create_user_in(users: UserManager, tx: AsyncConnection) -> UserRead:
    """A user created inside the caller's transaction."""
    return await users.create_user(
        name="Maria Souza", email=f"maria.{uuid.uuid4().hex[:8]}@aeroclube.com.br", role="pilot", tx=tx
    )


class TestQueryAfterEachWrite:
    async def test_create_user_leaves_one_create_row_on_users(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await users.create_user(
            name="João Silva", email="Joao@Aviacao.com", role="pilot", licenses=["PP", "IFR"]
        )

        event = await only_event(audit)
        assert event.action == "create"
        assert event.table_name == "users"
        assert event.record_id == user.user_id
        assert event.user_id == user.user_id
        assert event.old_values is None
        assert isinstance(event.new_values, dict)
        assert event.new_values["email"] == "joao@aviacao.com"
        assert event.new_values["licenses"] == ["PPR", "IFRA"]
        assert event.actor == "system:system"
        assert event.trace_id  # a fresh trace id when the caller set none
        assert event.timestamp.tzinfo is not None
        assert await count_rows(db, "audit_log") == 1

    async def test_update_user_leaves_one_update_row_with_old_and_new_values(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)

        await users.update_user(user.user_id, experience_level="commercial")

        event = await only_event(audit, action="update")
        assert event.table_name == "users"
        assert event.record_id == user.user_id
        assert event.user_id == user.user_id
        assert event.old_values == {"experience_level": "private"}  # derived from the licence PP
        assert event.new_values == {"experience_level": "commercial"}
        assert await count_rows(db, "audit_log") == 2

    async def test_store_memory_leaves_one_create_row_on_memory_entries(
        self, db: Database, users: UserManager, memories: MemoryManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)

        entry = await memories.store_memory(
            user_id=user.user_id, key="preferred_aircraft", value="Cessna 172", memory_type="long_term"
        )

        event = await only_event(audit, table="memory_entries")
        assert event.action == "create"
        assert event.record_id == entry.memory_id
        assert event.user_id == user.user_id
        assert isinstance(event.new_values, dict)
        assert event.new_values["value"] == "Cessna 172"
        assert await count_rows(db, "audit_log") == 2

    async def test_store_memory_over_an_existing_key_leaves_one_update_row(
        self, db: Database, users: UserManager, memories: MemoryManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)
        entry = await memories.store_memory(
            user_id=user.user_id, key="preferred_aircraft", value="Cessna 172", memory_type="long_term"
        )

        await memories.store_memory(
            user_id=user.user_id, key="preferred_aircraft", value="Piper PA-28", memory_type="long_term"
        )

        event = await only_event(audit, table="memory_entries", action="update")
        assert event.record_id == entry.memory_id
        assert event.user_id == user.user_id
        assert event.old_values == {"value": "Cessna 172"}
        assert event.new_values == {"value": "Piper PA-28"}
        assert await count_rows(db, "audit_log") == 3

    async def test_create_conversation_leaves_one_create_row_on_conversations(
        self, db: Database, users: UserManager, conversations: ConversationManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)

        conversation = await conversations.create_conversation(
            user_id=user.user_id, title="Consulta meteorológica"
        )

        event = await only_event(audit, table="conversations")
        assert event.action == "create"
        assert event.record_id == conversation.conversation_id
        assert event.user_id == user.user_id
        assert isinstance(event.new_values, dict)
        # The title is the user's words: the trail keeps the status and counters, not what the user wrote.
        assert event.new_values == {"status": "active", "message_count": 0, "total_tokens": 0}
        assert await count_rows(db, "audit_log") == 2

    async def test_add_message_leaves_one_create_row_on_messages(
        self, db: Database, users: UserManager, conversations: ConversationManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)
        conversation = await conversations.create_conversation(user_id=user.user_id)

        message = await conversations.add_message(
            conversation_id=conversation.conversation_id,
            user_id=user.user_id,
            content="Qual o METAR de SBGR?",
        )

        event = await only_event(audit, table="messages")
        assert event.action == "create"
        assert event.record_id == message.message_id
        assert event.user_id == user.user_id
        assert await count_rows(db, "audit_log") == 3

    async def test_add_message_does_not_copy_the_content_into_the_audit_row(
        self, users: UserManager, conversations: ConversationManager, audit: AuditManager
    ) -> None:
        user = await create_user(users)
        conversation = await conversations.create_conversation(user_id=user.user_id)

        await conversations.add_message(
            conversation_id=conversation.conversation_id, user_id=user.user_id, content=SECRET_CONTENT
        )

        event = await only_event(audit, table="messages")
        stored = event.model_dump_json() + json.dumps(event.new_values) + json.dumps(event.old_values)
        for fragment in ("XK-4471", "hunter2", "reserva", SECRET_CONTENT):
            assert fragment not in stored

    async def test_a_failed_write_leaves_no_audit_row(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        await create_user(users, email="joao@aviacao.com")

        with pytest.raises(ConflictError):
            await users.create_user(name="Outro João", email="JOAO@aviacao.com", role="pilot")

        assert len((await audit.query()).items) == 1
        assert await count_rows(db, "audit_log") == 1
        assert await count_rows(db, "users") == 1

    async def test_a_rejected_update_leaves_no_audit_row(
        self, db: Database, users: UserManager, audit: AuditManager
    ) -> None:
        await create_user(users, email="joao@aviacao.com")
        maria = await create_user(users, email="maria@aviacao.com")

        with pytest.raises(ConflictError):
            await users.update_user(maria.user_id, email="joao@aviacao.com")

        assert (await audit.query(action="update")).items == []
        assert await count_rows(db, "audit_log") == 2


class TestQueryFilters:
    async def test_filters_by_user_record_table_and_action(
        self,
        users: UserManager,
        memories: MemoryManager,
        conversations: ConversationManager,
        audit: AuditManager,
    ) -> None:
        joao = await create_user(users)
        maria = await create_user(users)
        memory = await memories.store_memory(user_id=joao.user_id, key="home_base", value="SBMT")
        await conversations.create_conversation(user_id=maria.user_id, title="NOTAM")
        await users.update_user(maria.user_id, name="Maria S. Souza")

        by_user = (await audit.query(user_id=joao.user_id)).items
        assert {(event.table_name, event.action) for event in by_user} == {
            ("users", "create"),
            ("memory_entries", "create"),
        }
        assert all(event.user_id == joao.user_id for event in by_user)

        by_record = (await audit.query(record_id=str(maria.user_id))).items
        assert [event.action for event in by_record] == ["update", "create"]
        assert all(event.record_id == maria.user_id for event in by_record)

        assert {event.record_id for event in (await audit.query(table="users")).items} == {
            joao.user_id,
            maria.user_id,
        }
        assert [event.record_id for event in (await audit.query(table="memory_entries")).items] == [
            memory.memory_id
        ]
        assert len((await audit.query(action="create")).items) == 4
        assert [event.record_id for event in (await audit.query(action="update")).items] == [maria.user_id]

    async def test_filters_combine(
        self, users: UserManager, conversations: ConversationManager, audit: AuditManager
    ) -> None:
        joao = await create_user(users)
        maria = await create_user(users)
        await conversations.create_conversation(user_id=joao.user_id)
        await conversations.create_conversation(user_id=maria.user_id)

        events = (await audit.query(user_id=maria.user_id, table="conversations", action="create")).items

        assert len(events) == 1
        assert events[0].user_id == maria.user_id
        assert events[0].table_name == "conversations"

    async def test_a_filter_that_matches_nothing_gives_an_empty_page(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        await create_user(users)

        filter_sets: list[dict[str, Any]] = [
            {"user_id": uuid.uuid4()},
            {"record_id": uuid.uuid4()},
            {"table": "messages"},
            {"action": "delete"},
        ]
        for filters in filter_sets:
            page = await audit.query(**filters)
            assert page.items == []
            assert page.next_cursor is None

    async def test_since_is_inclusive_and_until_exclusive(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        created = [await create_user(users) for _ in range(3)]
        events = list(reversed((await audit.query()).items))
        assert [event.record_id for event in events] == [user.user_id for user in created]
        first, middle, last = (event.timestamp for event in events)

        since_middle = (await audit.query(since=middle)).items
        until_middle = (await audit.query(until=middle)).items
        between = (await audit.query(since=middle, until=last)).items

        assert [event.record_id for event in since_middle] == [created[2].user_id, created[1].user_id]
        assert [event.record_id for event in until_middle] == [created[0].user_id]
        assert [event.record_id for event in between] == [created[1].user_id]
        assert (await audit.query(since=last + timedelta(microseconds=1))).items == []
        assert (await audit.query(until=first)).items == []

    async def test_since_and_until_in_another_time_zone_mean_the_same_instant(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        created = [await create_user(users) for _ in range(3)]
        middle = (await audit.query()).items[1].timestamp

        in_utc = await audit.query(since=middle)
        in_brasilia = await audit.query(since=middle.astimezone(BRASILIA))
        until_brasilia = await audit.query(until=middle.astimezone(BRASILIA))

        assert in_brasilia.items == in_utc.items
        assert [event.record_id for event in in_brasilia.items] == [created[2].user_id, created[1].user_id]
        assert [event.record_id for event in until_brasilia.items] == [created[0].user_id]

    async def test_a_time_range_far_from_the_writes_is_empty(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        await create_user(users)
        now = datetime.now(UTC)

        assert (await audit.query(until=now - timedelta(days=1))).items == []
        assert (await audit.query(since=now + timedelta(days=1))).items == []
        assert (
            len((await audit.query(since=now - timedelta(days=1), until=now + timedelta(days=1))).items) == 1
        )


class TestQueryPagination:
    async def test_pages_newest_first_without_duplicates_or_gaps(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        created: list[UserRead] = [await create_user(users) for _ in range(7)]
        for user in created[:3]:
            await users.update_user(user.user_id, experience_level="instructor")

        pages = await all_events(audit, limit=3)

        assert [len(page) for page in pages] == [3, 3, 3, 1]
        events = [event for page in pages for event in page]
        assert len({event.audit_id for event in events}) == 10
        assert events == (await audit.query(limit=500)).items
        keys = [(event.timestamp, event.audit_id) for event in events]
        assert keys == sorted(keys, reverse=True)
        expected_newest_first = [user.user_id for user in reversed(created[:3])] + [
            user.user_id for user in reversed(created)
        ]
        assert [event.record_id for event in events] == expected_newest_first

    async def test_pagination_keeps_the_filters(self, users: UserManager, audit: AuditManager) -> None:
        created = [await create_user(users) for _ in range(5)]
        for user in created:
            await users.update_user(user.user_id, experience_level="airline")

        pages = await all_events(audit, limit=2, action="update")

        assert [len(page) for page in pages] == [2, 2, 1]
        assert [event.record_id for page in pages for event in page] == [
            user.user_id for user in reversed(created)
        ]

    async def test_an_exactly_full_last_page_has_no_next_cursor(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        for _ in range(4):
            await create_user(users)

        first = await audit.query(limit=2)
        assert first.next_cursor is not None
        second = await audit.query(limit=2, cursor=first.next_cursor)

        assert len(second.items) == 2
        assert second.next_cursor is None
        assert {event.audit_id for event in first.items}.isdisjoint(event.audit_id for event in second.items)

    async def test_rows_written_after_the_first_page_do_not_shift_later_pages(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        older = [await create_user(users) for _ in range(4)]
        first = await audit.query(limit=2)
        assert first.next_cursor is not None

        await create_user(users)
        second = await audit.query(limit=2, cursor=first.next_cursor)

        assert [event.record_id for event in [*first.items, *second.items]] == [
            user.user_id for user in reversed(older)
        ]


class TestQueryValidation:
    @pytest.mark.parametrize(
        "cursor",
        [
            "not a cursor",
            "",
            "!!!!",
            encode_cursor("2026-01-01T00:00:00+00:00"),
            encode_cursor("2026-01-01T00:00:00", uuid.uuid4()),
            encode_cursor("yesterday", uuid.uuid4()),
            encode_cursor("2026-01-01T00:00:00+00:00", "1; DROP TABLE audit_log"),
            encode_cursor(uuid.uuid4()),
        ],
    )
    async def test_a_malformed_cursor_is_a_validation_error(self, audit: AuditManager, cursor: str) -> None:
        with pytest.raises(ValidationError, match="cursor"):
            await audit.query(cursor=cursor)

    async def test_a_truncated_cursor_is_a_validation_error(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        for _ in range(3):
            await create_user(users)
        cursor = (await audit.query(limit=1)).next_cursor
        assert cursor is not None

        for bad in (cursor[:-4], cursor[::-1], "A" + cursor):
            with pytest.raises(ValidationError, match="cursor"):
                await audit.query(limit=1, cursor=bad)

    async def test_a_cursor_of_another_list_is_a_validation_error(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        for _ in range(3):
            await create_user(users)
        users_cursor = (await users.list_users(limit=1)).next_cursor
        assert users_cursor is not None

        with pytest.raises(ValidationError, match="cursor"):
            await audit.query(cursor=users_cursor)

    @pytest.mark.parametrize("field", ["since", "until"])
    async def test_a_naive_datetime_is_a_validation_error(self, audit: AuditManager, field: str) -> None:
        naive: dict[str, Any] = {field: datetime.now(UTC).replace(tzinfo=None)}

        with pytest.raises(ValidationError, match=field):
            await audit.query(**naive)

    @pytest.mark.parametrize(
        ("filters", "problem"),
        [
            ({"user_id": "1; DROP TABLE users"}, "user_id"),
            ({"record_id": "not-a-uuid"}, "record_id"),
            ({"table": "users; DROP TABLE audit_log"}, "table"),
            ({"action": "create' OR '1'='1"}, "action"),
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
        ],
    )
    async def test_a_malformed_filter_is_a_validation_error(
        self, users: UserManager, audit: AuditManager, filters: dict[str, Any], problem: str
    ) -> None:
        await create_user(users)

        with pytest.raises(ValidationError, match=problem):
            await audit.query(**filters)


class TestQueryRecordsTheContext:
    async def test_the_request_context_ends_up_in_the_audit_row(
        self, users: UserManager, audit: AuditManager, db: Database
    ) -> None:
        async with db.context(
            principal=Principal(kind=PrincipalKind.admin, id="abc"),
            trace_id="t-1",
            ip_address="203.0.113.7",
            user_agent="pytest",
            purpose="support",
        ):
            user = await create_user(users)

        event = await only_event(audit, record_id=user.user_id)
        assert event.actor == "admin:abc"
        assert event.trace_id == "t-1"
        assert event.ip_address == "203.0.113.7"
        assert event.user_agent == "pytest"
        assert event.purpose == "support"

    async def test_the_context_applies_to_every_write_inside_and_to_none_after(
        self, users: UserManager, conversations: ConversationManager, audit: AuditManager, db: Database
    ) -> None:
        async with db.context(
            principal=Principal.system("agent-meteo"),
            trace_id="trace-42",
            ip_address="2001:db8::1",
        ):
            user = await create_user(users)
            await conversations.create_conversation(user_id=user.user_id)
        await users.update_user(user.user_id, name="Fora do contexto")

        inside = (await audit.query(action="create")).items
        assert len(inside) == 2
        for event in inside:
            assert event.actor == "system:agent-meteo"
            assert event.trace_id == "trace-42"
            assert event.ip_address == "2001:db8::1"
            assert event.user_agent is None
            assert event.purpose is None
        after = await only_event(audit, action="update")
        assert after.actor == "system:system"
        assert after.trace_id not in (None, "trace-42")
        assert after.ip_address is None

    async def test_a_write_without_a_principal_names_the_code_that_made_it(
        self, users: UserManager, conversations: ConversationManager, audit: AuditManager, db: Database
    ) -> None:
        async with db.context(principal=Principal.system("setup")):
            user = await create_user(users)
            conversation = await conversations.create_conversation(user_id=user.user_id)
        here = f"code: {__name__}:"
        where = "TestQueryRecordsTheContext.test_a_write_without_a_principal_names_the_code_that_made_it"

        await users.update_user(user.user_id, name="Sem contexto")
        await conversations.add_message(
            conversation_id=conversation.conversation_id, user_id=user.user_id, content="Teto 1.500 pés"
        )
        async with db.context(user_agent="nightly-job/1.0"):
            await users.update_user(user.user_id, name="Com agente")

        written = (await audit.query(actor="system:system")).items
        assert [(event.table_name, event.action) for event in written] == [
            ("users", "update"),
            ("messages", "create"),
            ("users", "update"),
        ]
        assert written[0].user_agent == "nightly-job/1.0"
        for event in written[1:]:
            assert event.user_agent is not None
            assert event.user_agent.startswith(here), event.user_agent
            assert event.user_agent.endswith(f" in {where}"), event.user_agent
        # A principal given, the code location is not recorded: the principal says who acted.
        assert all(event.user_agent is None for event in (await audit.query(actor="system:setup")).items)

    async def test_a_nested_context_keeps_the_outer_fields_it_does_not_set(
        self, users: UserManager, audit: AuditManager, db: Database
    ) -> None:
        async with (
            db.context(principal=Principal(kind=PrincipalKind.admin, id="abc"), ip_address="203.0.113.7"),
            db.context(purpose="support"),
        ):
            user = await create_user(users)

        event = await only_event(audit, record_id=user.user_id)
        assert event.actor == "admin:abc"
        assert event.ip_address == "203.0.113.7"
        assert event.purpose == "support"

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("user_agent", "curl\x00"),
            ("purpose", "sup\x00port"),
            ("trace_id", "a b"),
            ("user_agent", "x" * 501),
        ],
    )
    async def test_malformed_context_fields_are_validation_errors(
        self, db: Database, field: str, value: str
    ) -> None:
        fields: dict[str, Any] = {field: value}
        with pytest.raises(ValidationError, match=field):
            async with db.context(**fields):
                pass

    @pytest.mark.parametrize(
        "ip_address", ["999.1.1.1", "not-an-ip", "203.0.113.7; DROP TABLE audit_log", ""]
    )
    async def test_an_invalid_ip_address_is_a_validation_error(
        self, users: UserManager, db: Database, ip_address: str
    ) -> None:
        with pytest.raises(ValidationError, match="ip_address"):
            async with db.context(ip_address=ip_address):
                pass


class TestQueryAfterASharedTransaction:
    async def test_writes_sharing_a_transaction_are_audited_when_it_commits(
        self,
        db: Database,
        users: UserManager,
        conversations: ConversationManager,
        audit: AuditManager,
    ) -> None:
        async with db.transaction() as tx:
            user = await create_user_in(users, tx)
            conversation = await conversations.create_conversation(user_id=user.user_id, tx=tx)

        assert [event.record_id for event in (await audit.query()).items] == [
            conversation.conversation_id,
            user.user_id,
        ]

    async def test_an_exception_inside_the_block_leaves_neither_the_rows_nor_their_audit_rows(
        self,
        db: Database,
        users: UserManager,
        memories: MemoryManager,
        conversations: ConversationManager,
        audit: AuditManager,
    ) -> None:
        async def write_then_fail() -> None:
            async with db.transaction() as tx:
                user = await create_user_in(users, tx)
                await memories.store_memory(user_id=user.user_id, key="home_base", value="SBMT", tx=tx)
                await conversations.create_conversation(user_id=user.user_id, tx=tx)
                raise RuntimeError("the caller changed its mind")

        with pytest.raises(RuntimeError, match="changed its mind"):
            await write_then_fail()

        for table in ("users", "memory_entries", "conversations", "audit_log"):
            assert await count_rows(db, table) == 0, table
        assert (await audit.query()).items == []


class TestQueryIndexes:
    """The table and action filters read their partial indexes (message appends left out): the query carries the
    indexes' predicate word for word whenever its filters exclude appends, since neither PostgreSQL (from a
    parameter) nor SQLite (from anything but the same term) could prove it."""

    @pytest.mark.parametrize(
        ("filters", "index"),
        [
            ({"table": "users"}, "ix_audit_log_table_name_timestamp_audit_id"),
            ({"action": "erase"}, "ix_audit_log_action_timestamp_audit_id"),
            ({"table": "messages", "action": "update"}, "ix_audit_log_action_timestamp_audit_id"),
        ],
    )
    async def test_a_selective_filter_reads_its_index(
        self, db: Database, filters: dict[str, str], index: str
    ) -> None:
        async with db.engine.connect() as conn:
            statement = query_statement(filters).limit(101)
            compiled = statement.compile(dialect=conn.dialect)
            sql = str(compiled)
            assert APART_FROM_APPENDS in sql
            parameters = tuple(compiled.params[name] for name in compiled.positiontup or ())
            if db.backend == "sqlite":
                # SQLite refuses the statement ("no query solution") if this index cannot serve it.
                forced = sql.replace("FROM audit_log", f"FROM audit_log INDEXED BY {index}", 1)
                plan = " ".join(
                    str(row) for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {forced}", parameters)
                )
                assert index in plan, plan
                return
            # PostgreSQL takes a partial index only if it can prove its predicate from the query (here, from the same
            # text: a parameter proves nothing). With no rows to cost, which of the two it picks is a toss-up; the
            # partitions' copies of the indexes are named after the partitions.
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(row) for row in await conn.exec_driver_sql(f"EXPLAIN {sql}", parameters))
            assert any(f"_{name}_idx" in plan for name in PARTIAL_INDEXES), plan

    @pytest.mark.parametrize(
        "filters",
        [{"table": "messages"}, {"action": "create"}, {"table": "messages", "action": "create"}, {}],
    )
    def test_a_filter_that_takes_appends_does_not_exclude_them(self, filters: dict[str, str]) -> None:
        assert APART_FROM_APPENDS not in str(query_statement(filters))


PARTIAL_INDEXES = ("table_name_timestamp_audit_id", "action_timestamp_audit_id")


def query_statement(filters: dict[str, str]) -> Select[Any]:
    """AuditManager.query's statement for these filters (the others unset)."""
    unset: dict[str, Any] = dict.fromkeys(
        ("user_id", "record_id", "table", "action", "since", "until", "after")
    )
    return AuditRepository.query_statement(**(unset | filters))
