"""Profiles and activity on both backends: preferences (JSON merge patch, schema), experience levels (the set, the
derivation from licences), list_users filters, last_active following real activity (throttled), active users and
DAU/MAU. Tables are read back without the manager."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from stratus_db import (
    AuditManager,
    ConversationManager,
    Database,
    MemoryManager,
    NotFoundError,
    UserManager,
    ValidationError,
)
from stratus_db.kit.validation import MAX_JSON_BYTES
from stratus_db.models import Base
from stratus_db.users.activity import tracker_of
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import count_rows, create_user

USERS = Base.metadata.tables["users"]


async def stored(db: Database, user_id: uuid.UUID, column: str) -> Any:
    """A column of the user's row, as the database holds it."""
    async with db.transaction(read_only=True) as conn:
        return (await conn.execute(select(USERS.c[column]).where(USERS.c.user_id == user_id))).scalar_one()


@pytest.fixture
def user_updates(db: Database) -> Iterator[list[str]]:
    """Every UPDATE of the users table sent while the test runs."""
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE USERS"):
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", listen)
    yield seen
    event.remove(db.engine.sync_engine, "before_cursor_execute", listen)


class TestUpdatePreferences:
    async def test_merges_objects_removes_null_keys_and_replaces_the_rest(
        self, db: Database, users: UserManager
    ) -> None:
        user = await users.create_user(
            "Ana",
            "ana@aeroclube.com.br",
            "pilot",
            preferences={
                "language": "pt-BR",
                "units": "metric",
                "aircraft": ["C152"],
                "notifications": {"email": True, "push": True},
                "theme": "dark",
            },
        )

        updated = await users.update_preferences(
            user.user_id,
            {
                "units": "aviation",
                "aircraft": ["C172", "PA-28"],
                "notifications": {"push": None, "sms": False},
                "theme": None,
                "home_aerodrome": "sbmt",
                "painel": {"mapa": {"camadas": ["SIGMET"]}},
            },
        )

        expected = {
            "language": "pt-BR",
            "units": "aviation",
            "aircraft": ["C172", "PA-28"],
            "notifications": {"email": True, "sms": False},
            "home_aerodrome": "SBMT",
            "painel": {"mapa": {"camadas": ["SIGMET"]}},
        }
        assert updated.preferences == expected
        assert await stored(db, user.user_id, "preferences") == expected

    async def test_the_audit_row_holds_the_changed_keys_only(
        self, users: UserManager, audit: AuditManager
    ) -> None:
        user = await users.create_user(
            "Ana", "ana@aeroclube.com.br", "pilot", preferences={"language": "pt-BR", "units": "metric"}
        )

        await users.update_preferences(user.user_id, {"units": "aviation", "language": "pt-BR", "nota": 1})

        events = (await audit.query(user_id=user.user_id, action="update")).items
        assert len(events) == 1
        assert events[0].old_values == {"preferences": {"units": "metric", "nota": None}}
        assert events[0].new_values == {"preferences": {"units": "aviation", "nota": 1}}

    async def test_a_patch_that_changes_nothing_writes_nothing(
        self, db: Database, users: UserManager
    ) -> None:
        user = await users.create_user(
            "Ana", "ana@aeroclube.com.br", "pilot", preferences={"units": "metric"}
        )
        audit_rows = await count_rows(db, "audit_log")

        same = await users.update_preferences(user.user_id, {"units": "metric", "absent": None})

        assert same == user
        assert await count_rows(db, "audit_log") == audit_rows

    @pytest.mark.parametrize(
        ("patch", "named"),
        [
            ({"units": "furlongs"}, "units"),
            ({"units": 3}, "units"),
            ({"language": "portuguese"}, "language"),
            ({"home_aerodrome": "SBG"}, "home_aerodrome"),
            ({"home_aerodrome": "SB1R"}, "home_aerodrome"),
            ({"aircraft": "C172"}, "aircraft"),
            ({"aircraft": ["C172", 7]}, "aircraft"),
            ({"notifications": {"email": "yes"}}, "notifications"),
            ({"notifications": True}, "notifications"),
            ({"grande": "x" * (MAX_JSON_BYTES + 1)}, "preferences|patch"),
            ({"nan": float("nan")}, "patch"),
        ],
    )
    async def test_bad_input_names_the_key_and_writes_nothing(
        self, db: Database, users: UserManager, patch: dict[str, Any], named: str
    ) -> None:
        user = await users.create_user(
            "Ana", "ana@aeroclube.com.br", "pilot", preferences={"units": "metric"}
        )
        audit_rows = await count_rows(db, "audit_log")

        with pytest.raises(ValidationError, match=named):
            await users.update_preferences(user.user_id, patch)

        assert await stored(db, user.user_id, "preferences") == {"units": "metric"}
        assert await count_rows(db, "audit_log") == audit_rows

    async def test_a_merge_over_the_size_limit_is_refused(self, db: Database, users: UserManager) -> None:
        half = "x" * (MAX_JSON_BYTES // 2)
        user = await users.create_user("Ana", "ana@aeroclube.com.br", "pilot", preferences={"a": half})

        with pytest.raises(ValidationError, match=r"preferences.*bytes"):
            await users.update_preferences(user.user_id, {"b": half})

        assert await stored(db, user.user_id, "preferences") == {"a": half}

    @pytest.mark.parametrize("patch", [["units"], "units=metric", None, 3])
    async def test_a_patch_that_is_not_an_object_is_refused(self, users: UserManager, patch: Any) -> None:
        user = await create_user(users)
        with pytest.raises(ValidationError, match="patch must be a JSON object"):
            await users.update_preferences(user.user_id, patch)

    async def test_an_unknown_user_is_not_found(self, users: UserManager) -> None:
        with pytest.raises(NotFoundError):
            await users.update_preferences(uuid.uuid4(), {"units": "metric"})

    async def test_create_user_checks_the_known_keys_too(self, db: Database, users: UserManager) -> None:
        with pytest.raises(ValidationError, match="home_aerodrome"):
            await users.create_user(
                "Ana", "ana@aeroclube.com.br", "pilot", preferences={"home_aerodrome": 42}
            )
        assert await count_rows(db, "users") == 0


class TestExperienceLevel:
    async def test_free_text_is_refused_with_the_set(self, db: Database, users: UserManager) -> None:
        with pytest.raises(ValidationError, match=r"experience_level.*'student'.*'airline'"):
            await users.create_user("Ana", "ana@aeroclube.com.br", "pilot", experience_level="300h")
        user = await create_user(users)
        with pytest.raises(ValidationError, match="experience_level"):
            await users.update_user(user.user_id, experience_level="senior")
        assert await stored(db, user.user_id, "experience_level") == "private"
        assert await count_rows(db, "users") == 1

    @pytest.mark.parametrize(
        ("licenses", "role", "level"),
        [
            (["PP"], "pilot", "private"),
            (["PP", "PC"], "pilot", "commercial"),
            (["PCM", "INVA", "MNTE"], "instructor", "instructor"),
            (["PLA", "INVA", "PC"], "pilot", "airline"),
            (["MLTE", "PLH"], "pilot", "airline"),
            (["MMA", "CEL"], "mechanic", "maintenance"),
            (["DOV"], "dispatcher", "dispatch"),
            (["CMS", "CMA2"], "flight_attendant", "cabin"),
            (["IFRA", "CMA1"], "pilot", None),  # ratings and medical certificates alone say nothing
            ([], "student", "student"),
            ([], "pilot", None),
        ],
    )
    async def test_derived_from_the_licences_when_not_given(
        self, db: Database, users: UserManager, licenses: list[str], role: str, level: str | None
    ) -> None:
        user = await users.create_user("Ana", "ana@aeroclube.com.br", role, licenses=licenses)
        assert user.experience_level == level
        assert await stored(db, user.user_id, "experience_level") == level

    async def test_a_given_level_wins_over_the_licences(self, users: UserManager) -> None:
        user = await users.create_user(
            "Ana", "ana@aeroclube.com.br", "pilot", licenses=["PLA"], experience_level="instructor"
        )
        assert user.experience_level == "instructor"


class TestListUsersFilters:
    async def test_by_experience_level_and_active_since_across_pages(
        self, users: UserManager, clock: ManualClock
    ) -> None:
        old = [await create_user(users) for _ in range(3)]  # private, from the licence PP
        clock.advance(days=2)
        start = clock.now
        recent = [await create_user(users) for _ in range(5)]
        airline = await users.create_user("Ana", "ana@linha.com.br", "pilot", licenses=["PLA"])

        seen: list[uuid.UUID] = []
        cursor = None
        while True:
            page = await users.list_users(
                experience_level="private", active_since=start, limit=2, cursor=cursor
            )
            seen += [user.user_id for user in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

        assert seen == [user.user_id for user in recent]
        assert [u.user_id for u in (await users.list_users(experience_level="airline")).items] == [
            airline.user_id
        ]
        assert len((await users.list_users(experience_level="private")).items) == len(old) + len(recent)
        everyone_recent = await users.list_users(active_since=start, role="pilot")
        assert len(everyone_recent.items) == len(recent) + 1

    @pytest.mark.parametrize(
        ("arguments", "named"),
        [
            ({"experience_level": "300h"}, "experience_level"),
            ({"active_since": datetime(2026, 1, 1)}, "active_since"),  # noqa: DTZ001 - naive on purpose
            ({"active_since": "2026-01-01"}, "active_since"),
        ],
    )
    async def test_bad_filters_are_refused(
        self, users: UserManager, arguments: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(ValidationError, match=named):
            await users.list_users(**arguments)


class TestActivity:
    async def test_last_active_moves_after_a_message_once_a_minute(
        self, db: Database, users: UserManager, conversations: ConversationManager, clock: ManualClock,
        user_updates: list[str],
    ) -> None:  # fmt: skip
        user = await create_user(users)
        conversation = await conversations.create_conversation(user.user_id, "Briefing")
        tracker = tracker_of(db)

        clock.advance(seconds=5)
        first = clock.now
        await conversations.add_message(conversation.conversation_id, user.user_id, "METAR SBGR?")
        await tracker.drain()
        assert await stored(db, user.user_id, "last_active") == first
        assert len(user_updates) == 1

        clock.advance(seconds=30)
        await conversations.add_message(conversation.conversation_id, user.user_id, "E o TAF?")
        clock.advance(seconds=29)
        await conversations.add_message(conversation.conversation_id, user.user_id, "Obrigado")
        await tracker.drain()
        assert await stored(db, user.user_id, "last_active") == first, "not written again within the minute"
        assert len(user_updates) == 1

        clock.advance(seconds=2)  # 61 s after the last write
        await conversations.add_message(conversation.conversation_id, user.user_id, "Mais uma")
        await tracker.drain()
        assert await stored(db, user.user_id, "last_active") == clock.now
        assert len(user_updates) == 2

    async def test_store_memory_and_get_memory_count_as_activity(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        tracker = tracker_of(db)

        clock.advance(minutes=2)
        await memories.store_memory(user.user_id, "base", "SBMT")
        await tracker.drain()
        assert await stored(db, user.user_id, "last_active") == clock.now

        clock.advance(minutes=2)
        assert await memories.get_memory(user.user_id, "base") is not None
        clock.advance(minutes=2)
        assert await memories.get_memory(user.user_id, "base") is not None  # a cache hit, where caching is on
        await tracker.drain()
        assert await stored(db, user.user_id, "last_active") == clock.now

    async def test_a_refused_call_is_no_activity(
        self, db: Database, users: UserManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        clock.advance(minutes=5)
        with pytest.raises(ValidationError):
            await MemoryManager(db).store_memory(user.user_id, "", "x")
        await tracker_of(db).drain()
        assert await stored(db, user.user_id, "last_active") == user.last_active

    async def test_active_users_since(
        self, db: Database, users: UserManager, conversations: ConversationManager, clock: ManualClock
    ) -> None:
        quiet, busy = await create_user(users), await create_user(users)
        conversation = await conversations.create_conversation(busy.user_id)
        clock.advance(days=1)
        since = clock.now
        await conversations.add_message(conversation.conversation_id, busy.user_id, "NOTAM de SBSP?")
        await tracker_of(db).drain()

        page = await users.active_users(since)
        assert [user.user_id for user in page.items] == [busy.user_id]
        everyone = await users.active_users(since - timedelta(days=2), limit=1)
        assert [user.user_id for user in everyone.items] == [quiet.user_id]
        assert everyone.next_cursor is not None
        with pytest.raises(ValidationError, match="since"):
            await users.active_users(datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose

    async def test_activity_counts_per_day_and_month_from_messages(
        self, users: UserManager, conversations: ConversationManager, clock: ManualClock
    ) -> None:
        clock.now = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
        ana, bia, caio = [await create_user(users) for _ in range(3)]
        rooms = {u.user_id: await conversations.create_conversation(u.user_id) for u in (ana, bia, caio)}

        async def say(user_id: uuid.UUID, text: str, kind: str = "user_input") -> None:
            await conversations.add_message(rooms[user_id].conversation_id, user_id, text, message_type=kind)

        await say(ana.user_id, "um")
        await say(ana.user_id, "dois")  # the same user twice in a day counts once
        await say(bia.user_id, "três")
        await say(
            caio.user_id, "resposta", "agent_response"
        )  # the assistant's turn is not the user's activity
        clock.advance(days=3)  # 2 April
        await say(caio.user_id, "quatro")

        days = await users.activity_counts(
            datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 4, 3, tzinfo=UTC), granularity="day"
        )
        assert [(c.period, c.active_users) for c in days] == [
            (date(2026, 3, 29), 0),
            (date(2026, 3, 30), 2),
            (date(2026, 3, 31), 0),
            (date(2026, 4, 1), 0),
            (date(2026, 4, 2), 1),
        ]
        months = await users.activity_counts(
            datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC), granularity="month"
        )
        assert [(c.period, c.active_users) for c in months] == [(date(2026, 3, 1), 2), (date(2026, 4, 1), 1)]

    @pytest.mark.parametrize(
        ("arguments", "named"),
        [
            ({"since": datetime(2026, 1, 2, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "until"),
            ({"since": datetime(2026, 1, 1), "until": datetime(2026, 1, 2, tzinfo=UTC)}, "since"),  # noqa: DTZ001
            (
                {"since": datetime(2026, 1, 1, tzinfo=UTC), "until": datetime(2026, 2, 1, tzinfo=UTC),
                 "granularity": "week"},
                "granularity",
            ),
            ({"since": datetime(1900, 1, 1, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "periods"),
        ],
    )  # fmt: skip
    async def test_activity_counts_refuses_bad_ranges(
        self, users: UserManager, arguments: dict[str, Any], named: str
    ) -> None:
        with pytest.raises(ValidationError, match=named):
            await users.activity_counts(**arguments)
