"""search_memories: accents, stemming, codes, typos, ranking, filters, and any text as a query."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratus_db import Database, MemoryManager, UserManager, ValidationError
from stratus_db.memory.policy import frequency, recency, search_score, standing
from tests.fixtures.clock import ManualClock
from tests.fixtures.factories import create_user
from tests.fixtures.hostile import HOSTILE_QUERIES, hostile_text


async def _pilot_with_memories(users: UserManager, memories: MemoryManager) -> uuid.UUID:
    user = await create_user(users)
    for key, value, tier, importance in [
        ("preferred_aircraft", "Cessna 172", "long_term", 0.8),
        ("base", "SBGR Guarulhos", "long_term", 0.6),
        ("interesse", "informação meteorológica para voos VFR", "medium_term", 0.5),
        ("cma_validade", {"classe": "CMA 1ª classe", "expira": "2027-03"}, "critical", 0.9),
        (
            "ultimaNavegacao",
            {"origem": "SBKP", "destino": "SBRP", "combustível": "reserva de 45 min"},
            "short_term",
            0.4,
        ),
    ]:
        await memories.store_memory(user.user_id, key, value, tier, importance)
    return user.user_id


async def _keys(memories: MemoryManager, user_id: uuid.UUID, query: str, **options: Any) -> list[str]:
    return [result.memory.key for result in await memories.search_memories(user_id, query, **options)]


class TestLexicalMatching:
    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("meteorologia", "interesse"),  # stemmed: meteorológica ~ meteorologia
            ("METEOROLÓGICAS", "interesse"),  # case, accents and plural
            ("informacao", "interesse"),  # accent-insensitive
            ("SBGR", "base"),  # an ICAO code
            ("sbrp", "ultimaNavegacao"),  # a code inside a JSON value
            ("Cesna 172", "preferred_aircraft"),  # a typo
            ("aircraft", "preferred_aircraft"),  # a word of the key (snake_case)
            ("navegação", "ultimaNavegacao"),  # a word of the key (camelCase)
            ("combustivel", "ultimaNavegacao"),  # a key inside the JSON value
            ("validade do CMA", "cma_validade"),
        ],
    )
    async def test_finds_the_memory_a_pilot_means(
        self, users: UserManager, memories: MemoryManager, query: str, expected: str
    ) -> None:
        user_id = await _pilot_with_memories(users, memories)
        found = await _keys(memories, user_id, query)
        assert found, f"nothing found for {query!r}"
        assert found[0] == expected

    async def test_results_carry_the_score_and_its_components(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user_id = await _pilot_with_memories(users, memories)
        (result, *_) = await memories.search_memories(user_id, "SBGR")
        assert 0 < result.lexical <= 1
        assert result.importance == result.memory.importance_score == 0.6
        assert 0 < result.recency <= 1
        assert result.frequency == 0
        assert result.score == pytest.approx(0.6 * result.lexical + 0.4 * (0.5 * 0.6 + 0.3 * result.recency))

    async def test_unrelated_words_find_nothing(self, users: UserManager, memories: MemoryManager) -> None:
        user_id = await _pilot_with_memories(users, memories)
        assert await _keys(memories, user_id, "helicóptero turbina") == []

    async def test_another_users_memories_are_never_found(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        await _pilot_with_memories(users, memories)
        stranger = await create_user(users)
        assert await _keys(memories, stranger.user_id, "SBGR") == []

    async def test_a_stranger_with_many_more_matches_crowds_out_none_of_the_owners_memories(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        """Another user holds far more matches than any limit (and than SQLite's pool of max(5 × limit, 50)
        candidates), each a stronger match, more important and critical: the owner's own still come back, all of
        them, by words and by a typo."""
        owner = await create_user(users)
        for index in range(3):
            await memories.store_memory(
                owner.user_id, f"metar_{index}", f"METAR SBGR {index}", "long_term", 0.1
            )
        stranger = await create_user(users)
        for index in range(120):
            await memories.store_memory(
                stranger.user_id, f"metar_{index}", f"METAR METAR SBGR SBGR {index}", "critical", 1.0
            )
        owners = {"metar_0", "metar_1", "metar_2"}
        for query in ("metar sbgr", "METARR"):
            for limit in (1, 3, 10, 100):
                results = await memories.search_memories(owner.user_id, query, limit=limit)
                assert len(results) == min(limit, 3), (query, limit)
                assert {r.memory.key for r in results} <= owners
                assert all(r.memory.user_id == owner.user_id for r in results)

    async def test_a_user_id_is_no_query_word(self, users: UserManager, memories: MemoryManager) -> None:
        """The owner's id is part of what the index matches on SQLite, never one of the query's words."""
        owner, stranger = await _owner_and_stranger_with_numbers(users, memories)
        for query in (owner.hex, str(owner), stranger.hex, f"{owner.hex} {stranger.hex}"):
            assert await _keys(memories, owner, query) == [], query

    async def test_an_updated_value_is_searched_by_its_new_words(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user_id = await _pilot_with_memories(users, memories)
        await memories.store_memory(user_id, "base", "SBSP Congonhas")
        assert await _keys(memories, user_id, "SBGR") == []
        assert await _keys(memories, user_id, "congonhas") == ["base"]

    async def test_deleted_and_expired_memories_are_never_found(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user_id = await _pilot_with_memories(users, memories)
        await memories.delete_memory(user_id, "base")
        assert await _keys(memories, user_id, "SBGR") == []
        clock.advance(hours=25)  # the short_term navigation memory expires
        assert await _keys(memories, user_id, "SBRP") == []


class TestRanking:
    async def test_importance_breaks_a_lexical_tie(self, users: UserManager, memories: MemoryManager) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "nota_a", "pista 09 fechada em SBKP", "long_term", 0.2)
        await memories.store_memory(user.user_id, "nota_b", "pista 09 fechada em SBKP", "long_term", 0.9)
        assert await _keys(memories, user.user_id, "pista fechada SBKP") == ["nota_b", "nota_a"]

    async def test_recent_use_ranks_higher(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "antiga", "rota SBKP SBRP", "long_term", 0.5)
        await memories.store_memory(user.user_id, "nova", "rota SBKP SBRP", "long_term", 0.5)
        clock.advance(days=20)
        await memories.get_memory(user.user_id, "nova")
        results = await memories.search_memories(user.user_id, "rota SBKP")
        assert [r.memory.key for r in results] == ["nova", "antiga"]
        assert results[0].recency > results[1].recency

    async def test_critical_memories_rank_first_among_equals(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        # Stored at the same instant with the same text and importance: every score component is equal.
        # The critical one sorts last by key, so only the tie-break can put it first.
        await memories.store_memory(user.user_id, "a_comum", "ILS pista 27", "long_term", 0.7)
        await memories.store_memory(user.user_id, "z_critica", "ILS pista 27", "critical", 0.7)
        results = await memories.search_memories(user.user_id, "ILS 27")
        assert results[0].score == results[1].score
        assert [r.memory.key for r in results] == ["z_critica", "a_comum"]
        # PostgreSQL picks the best rows in the statement: the tie-break must hold there too.
        assert await _keys(memories, user.user_id, "ILS 27", limit=1) == ["z_critica"]

    async def test_standing_can_outweigh_a_stronger_lexical_match_even_at_limit_one(
        self, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        """The best `limit` are chosen by the full score, not by lexical relevance first (PostgreSQL chooses them in
        the statement, so a statement that ranked by lexical relevance alone would return `forte` here)."""
        user = await create_user(users)
        for index in range(
            8
        ):  # unrelated memories, so that SQLite's bm25 gives the query's words some weight
            await memories.store_memory(
                user.user_id, f"outra_{index}", f"abastecimento {index}", "long_term", 0.5
            )
        await memories.store_memory(
            user.user_id, "forte", "pista fechada em SBKP, pista fechada em SBKP", "long_term", 0.0
        )
        clock.advance(days=365)  # `forte` was last used a year ago: its recency is nil
        await memories.store_memory(user.user_id, "fraca", "SBKP operando normalmente hoje", "long_term", 1.0)

        both = {r.memory.key: r for r in await memories.search_memories(user.user_id, "pista fechada SBKP")}
        assert (
            both["forte"].lexical > both["fraca"].lexical
        )  # the premise: `forte` is the better lexical match
        assert both["fraca"].score > both["forte"].score
        assert await _keys(memories, user.user_id, "pista fechada SBKP", limit=1) == ["fraca"]

    async def test_score_components_are_policy_functions_of_the_memory(
        self, db: Database, users: UserManager, memories: MemoryManager, clock: ManualClock
    ) -> None:
        user = await create_user(users)
        await memories.store_memory(user.user_id, "usada", "rota SBKP SBRP", "long_term", 0.7)
        await memories.store_memory(user.user_id, "esquecida", "rota SBKP SBGR", "medium_term", 0.3)
        clock.advance(hours=30)
        await memories.get_memory(user.user_id, "usada")  # counted: one access, last used 30 h after storing
        clock.advance(days=3, hours=5)
        half_life = timedelta(seconds=db.settings.STRATUS_MEMORY_RECENCY_HALF_LIFE_S)

        results = await memories.search_memories(user.user_id, "rota SBKP")
        assert {r.memory.key for r in results} == {"usada", "esquecida"}
        for result in results:
            entry = result.memory
            assert result.importance == entry.importance_score
            assert result.recency == recency(entry.last_accessed_at or entry.updated_at, clock.now, half_life)
            assert result.frequency == frequency(entry.access_count)
            assert result.score == search_score(
                result.lexical, standing(result.importance, result.recency, result.frequency)
            )
            assert 0 < result.lexical <= 1
        by_key = {r.memory.key: r for r in results}
        assert by_key["usada"].memory.access_count == 1
        assert 0 < by_key["esquecida"].recency < by_key["usada"].recency < 1
        assert by_key["usada"].frequency > by_key["esquecida"].frequency == 0

    async def test_limit_types_and_importance_filter(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user = await create_user(users)
        for index, tier in enumerate(["short_term", "medium_term", "long_term", "critical"] * 3):
            await memories.store_memory(
                user.user_id, f"metar_{index}", f"METAR SBGR {index}", tier, index / 12
            )
        assert len(await memories.search_memories(user.user_id, "metar", limit=5)) == 5
        tiers = {
            r.memory.memory_type
            for r in await memories.search_memories(
                user.user_id, "metar", memory_types=["critical", "long_term"]
            )
        }
        assert tiers == {"critical", "long_term"}
        important = await memories.search_memories(user.user_id, "metar", min_importance=0.5)
        assert sorted(r.memory.importance_score for r in important) == [index / 12 for index in range(6, 12)]

    async def test_searching_does_not_count_as_access(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user_id = await _pilot_with_memories(users, memories)
        await memories.search_memories(user_id, "SBGR")
        entry = (await memories.list_memories(user_id, "long_term")).items[0]
        assert entry.access_count == 0


async def _owner_and_stranger_with_numbers(
    users: UserManager, memories: MemoryManager
) -> tuple[uuid.UUID, uuid.UUID]:
    """Two users holding the same memories, numbers and FTS5 keywords among their words: a query that matches one
    user's memories matches the other's too."""
    pair = []
    for _ in range(2):
        user = await create_user(users)
        for key, value in [
            ("altitude", 1),
            ("frequencia", 118.7),
            ("pista", {"numero": 9, "comprimento_m": 3700}),
            ("nota", "near and or not"),
            ("base", "SBGR Guarulhos"),
        ]:
            await memories.store_memory(user.user_id, key, value, "long_term", 0.5)
        pair.append(user.user_id)
    return pair[0], pair[1]


class TestHostileQueries:
    @pytest.mark.parametrize("query", HOSTILE_QUERIES)
    async def test_any_text_is_a_query(self, users: UserManager, memories: MemoryManager, query: str) -> None:
        owner, _ = await _owner_and_stranger_with_numbers(users, memories)
        results = await memories.search_memories(owner, query, limit=100)
        assert all(r.memory.user_id == owner for r in results)

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("1", "altitude"),
            ("$1", "altitude"),
            ('" OR 1=1 --', "altitude"),
            ("1 UNION SELECT * FROM users --", "altitude"),
            ("118.7", "frequencia"),
            ("9", "pista"),
            ("NEAR", "nota"),
            ("and or not", "nota"),
            ("NEAR(altitude 1, 2)", "altitude"),
            ("search_text:1", "altitude"),
            ("user_id : 1", "altitude"),
            ("\u0301altitude", "altitude"),
            ("\u202e1 edutitla\u202c", "altitude"),
            pytest.param("1 " * 5_000, "altitude", id="10 kB of one digit"),
        ],
    )
    async def test_the_words_of_a_hostile_query_find_the_owners_memory(
        self, users: UserManager, memories: MemoryManager, query: str, expected: str
    ) -> None:
        owner, _ = await _owner_and_stranger_with_numbers(users, memories)
        results = await memories.search_memories(owner, query, limit=100)
        assert expected in [r.memory.key for r in results]
        assert all(r.memory.user_id == owner for r in results)

    async def test_the_words_inside_hostile_text_still_count(
        self, users: UserManager, memories: MemoryManager
    ) -> None:
        user_id = await _pilot_with_memories(users, memories)
        assert (await _keys(memories, user_id, "'; SBGR\x00 --"))[0] == "base"

    @pytest.mark.parametrize(
        "arguments",
        [{"limit": 0}, {"limit": 101}, {"memory_types": ["eternal"]}, {"min_importance": 2}, {"query": 42}],
    )
    async def test_malformed_arguments_are_validation_errors(
        self, users: UserManager, memories: MemoryManager, arguments: dict[str, Any]
    ) -> None:
        user = await create_user(users)
        call: dict[str, Any] = {"user_id": user.user_id, "query": "sbgr"} | arguments
        with pytest.raises(ValidationError):
            await memories.search_memories(**call)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.one_of(st.text(max_size=400), hostile_text))
async def test_no_text_makes_search_fail(
    db: Database, users: UserManager, memories: MemoryManager, query: str
) -> None:
    user = await create_user(users)
    await memories.store_memory(user.user_id, "base", "SBGR Guarulhos", "long_term", 0.6)
    await memories.store_memory(user.user_id, "altitude", 1, "long_term", 0.5)
    await memories.store_memory(user.user_id, "nota", "near and or not para de", "long_term", 0.5)
    results = await memories.search_memories(user.user_id, query)
    assert all(r.memory.user_id == user.user_id for r in results)


async def test_a_typo_among_other_words_still_finds_the_memory(
    users: UserManager, memories: MemoryManager
) -> None:
    user_id = await _pilot_with_memories(users, memories)
    assert (await _keys(memories, user_id, "qual é a aeronave Cesna preferida"))[0] == "preferred_aircraft"


async def test_a_stop_word_in_the_query_is_not_taken_for_a_typo(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    """PostgreSQL's full text ignores "para"; its trigrams would match every text that contains it, perfectly. (SQLite's
    FTS5 has no stop words: there "para" is a word like any other, weighed by bm25.)"""
    user = await create_user(users)
    await memories.store_memory(user.user_id, "base", "aeródromo SBKP Campinas", "long_term", 0.1)
    await memories.store_memory(user.user_id, "nota", "material para estudo da prova", "long_term", 0.9)
    keys = await _keys(memories, user.user_id, "plano para SBKP")
    assert "base" in keys
    if db.backend == "postgresql":
        assert keys == ["base"]


def test_words_split_camel_case_beyond_ascii() -> None:
    from stratus_db.kit.text import words

    assert words("dataÚltimoVoo") == ["data", "ultimo", "voo"]
    assert words("preferred_aircraft-2024.v2") == ["preferred", "aircraft", "2024", "v2"]


async def test_the_servers_trigram_threshold_changes_nothing(
    db: Database, users: UserManager, memories: MemoryManager
) -> None:
    """PostgreSQL: search compares word_similarity with its own threshold, never through `%>` and the server's
    pg_trgm.word_similarity_threshold, so a stricter server setting hides no typo; SQLite: the FTS5 trigram index
    finds a code by its trigrams."""
    from sqlalchemy import text

    user_id = await _pilot_with_memories(users, memories)
    async with db.transaction() as conn:
        if db.backend == "sqlite":
            matches = await conn.execute(
                text(
                    "SELECT count(*) FROM memory_entries_fts_trigram WHERE memory_entries_fts_trigram MATCH 'ssn'"
                )
            )
            assert matches.scalar_one() == 1
            return
        await conn.execute(text("SET LOCAL pg_trgm.word_similarity_threshold = 0.95"))
        found = await memories.search_memories(user_id, "Cesna", tx=conn)
    assert found[0].memory.key == "preferred_aircraft"


_typo_alphabet = "abcdeøç0123"
"""Few letters, so that a typo's similarity with its word often lands near the threshold, both sides of it; ø is a
letter pg_trgm hashes (and accents fold: ç is c)."""


def _with_typo(word: str, position: int, kind: int, letter: str) -> str:
    position %= len(word)
    if kind == 0:
        return word[:position] + word[position + 1 :]
    if kind == 1:
        return word[:position] + letter + word[position + 1 :]
    return word[:position] + letter + word[position:]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(st.text(_typo_alphabet, min_size=4, max_size=9), min_size=1, max_size=4),
    position=st.integers(0, 8),
    kind=st.integers(0, 2),
    letter=st.sampled_from(_typo_alphabet),
)
async def test_a_typo_similar_enough_to_a_stored_word_finds_its_memory(
    db: Database,
    users: UserManager,
    memories: MemoryManager,
    words: list[str],
    position: int,
    kind: int,
    letter: str,
) -> None:
    """Whatever spares the server its trigram comparisons (PostgreSQL screens the rows first) never hides a memory
    that the backend's trigram measure puts at or above its threshold."""
    from sqlalchemy import text

    from stratus_db.kit.text import best_word_similarity, query_terms, search_text
    from stratus_db.memory.search import PostgresMemorySearch, SQLiteMemorySearch

    query = _with_typo(words[0], position, kind, letter)
    (term,) = query_terms(query) or [""]
    if len(term) < PostgresMemorySearch.MIN_TRIGRAM_TERM:
        return
    user = await create_user(users)
    stored = await memories.store_memory(user.user_id, "nota", " ".join(words), "long_term", 0.5)
    if db.backend == "sqlite":
        similar = (
            best_word_similarity([term], search_text("nota", " ".join(words)))
            >= SQLiteMemorySearch.TRIGRAM_THRESHOLD
        )
    else:
        async with db.transaction() as conn:
            similarity = await conn.execute(
                text("SELECT word_similarity(:term, search_text) FROM memory_entries WHERE memory_id = :id"),
                {"term": term, "id": stored.memory_id},
            )
            similar = similarity.scalar_one() >= PostgresMemorySearch.TRIGRAM_THRESHOLD
    found = [result.memory.key for result in await memories.search_memories(user.user_id, query)]
    if similar:
        assert found == ["nota"], (query, words)
