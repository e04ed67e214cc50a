"""search_messages and the usage statistics, on both backends, against hand-computed values."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratus_db import ConversationManager, Database, NotFoundError, UserManager, ValidationError
from stratus_db.models import MessageType
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import create_user
from tests.fixtures.hostile import HOSTILE_QUERIES, hostile_text


async def _chat(users: UserManager, conversations: ConversationManager) -> tuple[uuid.UUID, uuid.UUID]:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "Meteorologia")
    await conversations.add_messages(
        conv.conversation_id,
        user.user_id,
        [
            {"content": "Preciso da previsão meteorológica para SBGR amanhã cedo."},
            {"content": "Qual a pressão de óleo mínima do Cessna 172?"},
            {"content": "Ajuda com o briefing: meteorologia em Guarulhos e teto para VFR."},
        ],
    )
    return conv.conversation_id, user.user_id


async def _owner_and_stranger_with_numbers(
    users: UserManager, conversations: ConversationManager
) -> tuple[uuid.UUID, uuid.UUID]:
    """Two users who said the same things, numbers and FTS5 keywords among their words: a query that matches one
    user's messages matches the other's too."""
    pair = []
    for _ in range(2):
        user = await create_user(users)
        conv = await conversations.create_conversation(user.user_id, "Números")
        await conversations.add_messages(
            conv.conversation_id,
            user.user_id,
            [
                {"content": "Nível de voo 350, altitude 1 confirmada."},
                {"content": "near and or not: palavras que o FTS5 leria como operadores"},
                {"content": "Frequência 118.7 em Guarulhos, pista 9."},
            ],
        )
        pair.append(user.user_id)
    return pair[0], pair[1]


class TestSearchMessages:
    async def test_accents_and_stems_match(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        _, user_id = await _chat(users, conversations)
        hits = await conversations.search_messages(user_id, "METEOROLOGICA")
        assert {hit.message.seq for hit in hits} == {1, 3}
        assert all(0 < hit.score < 1 for hit in hits)
        assert [hit.message.seq for hit in await conversations.search_messages(user_id, "pressao oleo")] == [
            2
        ]

    async def test_more_matched_words_rank_higher(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        _, user_id = await _chat(users, conversations)
        hits = await conversations.search_messages(user_id, "meteorologia Guarulhos teto")
        assert [hit.message.seq for hit in hits] == [3, 1]
        assert hits[0].score > hits[1].score

    async def test_only_the_users_messages_in_conversations_that_are_not_deleted(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conversation_id, user_id = await _chat(users, conversations)
        _, other_user = await _chat(users, conversations)
        assert len(await conversations.search_messages(other_user, "meteorologia")) == 2
        await conversations.delete_conversation(conversation_id, user_id)
        assert await conversations.search_messages(user_id, "meteorologia") == []
        await conversations.restore_conversation(conversation_id, user_id)
        assert len(await conversations.search_messages(user_id, "meteorologia")) == 2

    async def test_a_stranger_with_many_more_matches_crowds_out_none_of_the_owners_messages(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        _, owner = await _chat(users, conversations)
        stranger = await create_user(users)
        conv = await conversations.create_conversation(stranger.user_id, "Meteorologia")
        await conversations.add_messages(
            conv.conversation_id,
            stranger.user_id,
            [{"content": "Meteorologia, meteorologia: SBGR Guarulhos, teto e meteorologia."}] * 150,
        )
        for limit in (1, 2, 20, 100):
            hits = await conversations.search_messages(owner, "meteorologia Guarulhos", limit=limit)
            assert len(hits) == min(limit, 2), limit
            assert {hit.message.seq for hit in hits} <= {1, 3}
            assert all(hit.message.user_id == owner for hit in hits)

    async def test_a_user_id_is_no_query_word(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        """The owner's id is part of what the index matches on SQLite, never one of the query's words."""
        owner, stranger = await _owner_and_stranger_with_numbers(users, conversations)
        for query in (owner.hex, str(owner), stranger.hex, f"{owner.hex} {stranger.hex}"):
            assert await conversations.search_messages(owner, query) == [], query

    async def test_packed_messages_are_found_and_purged_ones_are_gone(
        self, users: UserManager, conversations: ConversationManager
    ) -> None:
        conversation_id, user_id = await _chat(users, conversations)
        await conversations.archive_conversation(conversation_id, user_id, pack=True)
        hits = await conversations.search_messages(user_id, "Cessna")
        assert [hit.message.content for hit in hits] == ["Qual a pressão de óleo mínima do Cessna 172?"]
        await conversations.purge_conversation(conversation_id, user_id)
        assert await conversations.search_messages(user_id, "Cessna") == []

    async def test_limit(self, users: UserManager, conversations: ConversationManager) -> None:
        _, user_id = await _chat(users, conversations)
        assert len(await conversations.search_messages(user_id, "meteorologia", limit=1)) == 1

    @pytest.mark.parametrize("query", HOSTILE_QUERIES)
    async def test_hostile_queries_return_results_or_nothing(
        self, users: UserManager, conversations: ConversationManager, query: str
    ) -> None:
        owner, _ = await _owner_and_stranger_with_numbers(users, conversations)
        hits = await conversations.search_messages(owner, query, limit=100)
        assert all(hit.message.user_id == owner for hit in hits)
        # A query is cut to its first words: a real word up front is still found whatever follows it.
        hits = await conversations.search_messages(owner, "Guarulhos " + query, limit=100)
        assert 3 in [hit.message.seq for hit in hits]
        assert all(hit.message.user_id == owner for hit in hits)

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("1", 1),
            ("$1", 1),
            ('" OR 1=1 --', 1),
            ("1 UNION SELECT * FROM users --", 1),
            ("NEAR", 2),
            ("and or not", 2),
            ("NEAR(altitude 1, 2)", 1),
            ("content:1", 1),
            ("user_id : 1", 1),
            ("\u0301altitude", 1),
            ("\u202e1 edutitla\u202c", 1),
            pytest.param("1 " * 5_000, 1, id="10 kB of one digit"),
        ],
    )
    async def test_the_words_of_a_hostile_query_find_the_owners_message(
        self, users: UserManager, conversations: ConversationManager, query: str, expected: int
    ) -> None:
        owner, _ = await _owner_and_stranger_with_numbers(users, conversations)
        hits = await conversations.search_messages(owner, query, limit=100)
        assert expected in [hit.message.seq for hit in hits]
        assert all(hit.message.user_id == owner for hit in hits)

    @pytest.mark.parametrize(
        ("arguments", "complaint"),
        [
            ({"query": None}, "query"),
            ({"query": 42}, "query"),
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"user_id": "x"}, "user_id"),
        ],
    )
    async def test_bad_arguments(
        self,
        users: UserManager,
        conversations: ConversationManager,
        arguments: dict[str, object],
        complaint: str,
    ) -> None:
        user = await create_user(users)
        call: dict[str, object] = {"user_id": user.user_id, "query": "metar"} | arguments
        with pytest.raises(ValidationError, match=complaint):
            await conversations.search_messages(**call)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.one_of(st.text(max_size=400), hostile_text))
async def test_no_text_makes_message_search_fail(
    db: Database, users: UserManager, conversations: ConversationManager, query: str
) -> None:
    user = await create_user(users)
    conv = await conversations.create_conversation(user.user_id, "Números")
    await conversations.add_messages(
        conv.conversation_id,
        user.user_id,
        [{"content": "SBGR Guarulhos"}, {"content": "altitude 1"}, {"content": "near and or not para de"}],
    )
    hits = await conversations.search_messages(user.user_id, query)
    assert all(hit.message.user_id == user.user_id for hit in hits)


DAY_ONE = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)


async def _usage(users: UserManager, conversations: ConversationManager, clock: ManualClock) -> uuid.UUID:
    """Day one: a conversation, 20 answers of `meteorologia` taking 1…20 s, 3 questions. Day two: another
    conversation with 2 answers of `navegacao` (4 s and 6 s) and a system message."""
    clock.now = DAY_ONE
    user = await create_user(users)
    first = await conversations.create_conversation(user.user_id, "um")
    for whole_seconds in range(20, 0, -1):
        await conversations.add_message(
            first.conversation_id,
            user.user_id,
            "resposta",
            "agent_response",
            agent_name="meteorologia",
            tokens_used=10,
            response_time=float(whole_seconds),
        )
    for _ in range(3):
        await conversations.add_message(first.conversation_id, user.user_id, "pergunta", tokens_used=5)
    clock.advance(hours=1)  # 00:30 UTC on day two (21:30 in Brasília: days are UTC days)
    second = await conversations.create_conversation(user.user_id, "dois")
    for seconds in (6.0, 4.0):
        await conversations.add_message(
            second.conversation_id,
            user.user_id,
            "rota",
            "agent_response",
            agent_name="navegacao",
            tokens_used=100,
            response_time=seconds,
        )
    await conversations.add_message(second.conversation_id, user.user_id, "contexto", "system", tokens_used=1)
    return user.user_id


class TestUsageStats:
    async def test_per_day_agent_and_type_against_hand_computed_values(
        self, users: UserManager, conversations: ConversationManager, clock: ManualClock
    ) -> None:
        user_id = await _usage(users, conversations, clock)
        stats = await conversations.get_usage_stats(user_id)
        assert (stats.conversations, stats.messages, stats.tokens) == (2, 26, 200 + 15 + 201)
        assert [(d.day, d.conversations, d.messages, d.tokens) for d in stats.per_day] == [
            (date(2026, 3, 1), 1, 23, 215),
            (date(2026, 3, 2), 1, 3, 201),
        ]
        by_agent = {a.agent_name: a for a in stats.per_agent}
        assert [a.agent_name for a in stats.per_agent] == [None, "meteorologia", "navegacao"]
        assert (by_agent[None].messages, by_agent[None].tokens) == (4, 16)
        assert (by_agent[None].average_response_time, by_agent[None].p95_response_time) == (None, None)
        weather = by_agent["meteorologia"]
        assert (weather.messages, weather.tokens, weather.average_response_time) == (20, 200, 10.5)
        # Times 1…20: position 0.95 × 19 = 18.05 → 19 + 0.05 × (20 − 19).
        assert weather.p95_response_time == pytest.approx(19.05)
        route = by_agent["navegacao"]
        # Times 4, 6: position 0.95 → 4 + 0.95 × 2.
        assert route.average_response_time == 5.0
        assert route.p95_response_time == pytest.approx(5.9)
        assert stats.per_type == {
            MessageType.user_input: 3,
            MessageType.agent_response: 22,
            MessageType.system: 1,
        }

    async def test_a_time_window_and_all_users(
        self, users: UserManager, conversations: ConversationManager, clock: ManualClock
    ) -> None:
        user_id = await _usage(users, conversations, clock)
        other = await create_user(users)
        conv = await conversations.create_conversation(other.user_id, "outro")
        await conversations.add_message(conv.conversation_id, other.user_id, "oi", tokens_used=2)
        day_two = datetime(2026, 3, 2, tzinfo=UTC)
        later = await conversations.get_usage_stats(user_id, since=day_two)
        assert (later.conversations, later.messages, later.tokens) == (1, 3, 201)
        earlier = await conversations.get_usage_stats(user_id, until=day_two)
        assert (earlier.conversations, earlier.messages, earlier.tokens) == (1, 23, 215)
        everyone = await conversations.get_usage_stats()
        assert (everyone.conversations, everyone.messages, everyone.tokens) == (3, 27, 418)
        nothing = await conversations.get_usage_stats(user_id, since=day_two + timedelta(days=30))
        assert (nothing.messages, nothing.per_day, nothing.per_agent) == (0, [], [])

    @pytest.mark.parametrize(
        ("arguments", "complaint"),
        [
            ({"user_id": "nope"}, "user_id"),
            ({"since": datetime(2026, 1, 1)}, "timezone"),  # noqa: DTZ001
            ({"since": DAY_ONE, "until": DAY_ONE}, "later than since"),
            ({"until": "ontem"}, "until"),
        ],
    )
    async def test_bad_arguments(
        self, conversations: ConversationManager, arguments: dict[str, object], complaint: str
    ) -> None:
        with pytest.raises(ValidationError, match=complaint):
            await conversations.get_usage_stats(**arguments)  # type: ignore[arg-type]


class TestConversationStats:
    async def test_one_conversation(
        self, users: UserManager, conversations: ConversationManager, clock: ManualClock
    ) -> None:
        user_id = await _usage(users, conversations, clock)
        listed = (await conversations.list_conversations(user_id)).items
        second = next(c for c in listed if c.title == "dois")
        stats = await conversations.get_conversation_stats(second.conversation_id, user_id)
        assert (stats.messages, stats.tokens) == (3, 201)
        assert stats.first_message_at == stats.last_message_at == DAY_ONE + timedelta(hours=1)
        assert [(a.agent_name, a.messages, a.p95_response_time) for a in stats.per_agent] == [
            (None, 1, None),
            ("navegacao", 2, pytest.approx(5.9)),
        ]
        assert stats.per_type[MessageType.system] == 1

    async def test_another_users_conversation_is_not_found(
        self, db: Database, users: UserManager, conversations: ConversationManager
    ) -> None:
        conversation_id, _ = await _chat(users, conversations)
        intruder = await create_user(users)
        with pytest.raises(NotFoundError, match="does not belong"):
            await conversations.get_conversation_stats(conversation_id, intruder.user_id)
