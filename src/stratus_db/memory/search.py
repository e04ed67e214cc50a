"""Lexical candidates for search_memories: PostgreSQL and SQLite side by side behind one small interface.

Each backend returns the user's live memories that match the query's words, each with a lexical relevance in [0, 1];
the manager blends it with importance, recency and frequency (memory/policy.py) and keeps the best. PostgreSQL ranks
by that blend in the statement and returns only the best rows; SQLite returns a wider pool ranked by lexical score.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Uuid,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.kit import driver
from stratus_db.kit.models import table_of
from stratus_db.kit.text import best_word_similarity, fts5_owned_query, fts5_stem_query, trigrams
from stratus_db.kit.types import UTCDateTime
from stratus_db.memory.policy import (
    FREQUENCY_SATURATION,
    FREQUENCY_WEIGHT,
    IMPORTANCE_WEIGHT,
    LEXICAL_WEIGHT,
    RECENCY_WEIGHT,
)
from stratus_db.memory.schemas import MemoryEntry
from stratus_db.models import MemoryRow, MemoryType

if TYPE_CHECKING:
    from stratus_db.database import Operation

_memories = table_of(MemoryRow)


class MemoryCandidate(NamedTuple):
    """A memory a backend found: its columns as read (built straight from the driver's row; the manager makes
    MemoryEntries of the few it returns) and its lexical relevance."""

    memory_id: uuid.UUID
    user_id: uuid.UUID
    memory_type: str
    """A MemoryType, or its value as PostgreSQL's driver returns it."""
    key: str
    value: Any
    """The stored JSON value."""
    importance_score: float
    access_count: int
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime | None
    lexical: float
    """In [0, 1]."""


_ENTRY_COLUMNS = [name for name in MemoryCandidate._fields if name in MemoryEntry.model_fields]
"""The columns of a MemoryEntry, in MemoryCandidate's order: what the statements select before `lexical`."""


@dataclass(frozen=True)
class SearchFilters:
    user_id: uuid.UUID
    memory_types: tuple[MemoryType, ...] | None
    min_importance: float | None
    now: datetime


class MemorySearchBackend(Protocol):
    async def search(
        self,
        op: Operation,
        terms: list[str],
        filters: SearchFilters,
        limit: int,
        *,
        tx: AsyncConnection | None,
    ) -> list[MemoryCandidate]:
        """The user's live memories that match, in no particular order, among which are the best `limit` by
        policy.search_score (the manager scores them again and keeps those): exactly those on PostgreSQL,
        which ranks in the statement; on SQLite the best max(5 × limit, 50) by lexical score. In the caller's `tx`
        when given."""


@dataclass(frozen=True)
class TrigramScreen:
    """A necessary condition for `word_similarity(term, text) >= threshold` that costs substring tests only.

    pg_trgm's word_similarity is at most (the term's trigrams found in the text) / (the term's trigrams), so a text
    can reach the threshold only if it holds at least `needed` of them; and a trigram of a letters-and-digits term
    that a text holds leaves its letters (pg_trgm's padding spaces aside) as a substring of that text. So a text
    that contains fewer than `needed` of `pieces` cannot match, nor can one that contains none of `any_of` (any
    len(pieces) - needed + 1 of them: it misses more than the term can spare). The server computes word_similarity
    (tens of microseconds a row) only for the texts that pass both.
    """

    any_of: tuple[str, ...]
    """LIKE patterns: a text that can match contains one of them."""
    pieces: tuple[str, ...]
    needed: int

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def of(term: str, threshold: float) -> TrigramScreen:
        """The screen of one query term (the same terms come back often: they are computed once)."""
        if not term.isascii():
            # pg_trgm hashes the trigrams of other characters, and may split words elsewhere: no screening.
            return TrigramScreen(any_of=("%",), pieces=(), needed=0)
        # Any len - needed + 1 of the trigrams make a correct any_of; the rarest make the most selective one.
        pieces = tuple(sorted((gram.strip() for gram in trigrams(term)), key=_rarity, reverse=True))
        # Rounded down by a hair, so that float error can only let more texts through, never fewer.
        needed = math.ceil(threshold * len(pieces) - 1e-9)
        return TrigramScreen(
            any_of=tuple(f"%{piece}%" for piece in pieces[: len(pieces) - needed + 1]),
            pieces=pieces,
            needed=needed,
        )


_LETTERS_BY_FREQUENCY = "aeosridmntculpvgqhfbzjxkwy"
"""In Portuguese text, most frequent first; digits and anything else are rarer still."""


def _rarity(piece: str) -> tuple[int, int, str]:
    """Longer pieces first (a text holds fewer of them), then those of rarer letters."""
    rare = len(_LETTERS_BY_FREQUENCY)
    letters = sum(rank if (rank := _LETTERS_BY_FREQUENCY.find(char)) >= 0 else rare for char in piece)
    return len(piece), letters, piece


def _columns_of(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in _ENTRY_COLUMNS)


_UNDERFLOW_HALF_LIVES = 1074
"""0.5 to a larger power underflows a float8, which PostgreSQL reports as an error where Python returns 0; 2^-1074
is as good as 0 next to any lexical score."""


def _search_score_sql(row: str, *, now: str, half_life_s: str) -> str:
    """policy.search_score(lexical, policy.standing(importance, recency, frequency)) of `row` (memory_entries
    columns plus `lexical`) as a float8 SQL expression. It is built from policy.py's weights and follows its
    operations in the same order, so SQL and Python rank alike (but for the last bits of a float)."""

    def weight(value: float) -> str:
        return f"{value!r}::float8"

    age_s = (
        f"greatest(extract(epoch FROM {now} - coalesce({row}.last_accessed_at, {row}.updated_at))::float8, 0)"
    )
    recency = f"power(0.5::float8, least({age_s} / {half_life_s}, {_UNDERFLOW_HALF_LIVES}))"
    frequency = (
        f"least(1::float8, ln(1 + greatest({row}.access_count, 0)::float8)"
        f" / {weight(math.log1p(FREQUENCY_SATURATION))})"
    )
    standing = (
        f"{weight(IMPORTANCE_WEIGHT)} * {row}.importance_score + {weight(RECENCY_WEIGHT)} * {recency}"
        f" + {weight(FREQUENCY_WEIGHT)} * {frequency}"
    )
    return f"{weight(LEXICAL_WEIGHT)} * {row}.lexical + {weight(1 - LEXICAL_WEIGHT)} * ({standing})"


class PostgresMemorySearch:
    """Full text with the `stratus_portuguese` configuration (portuguese stemming after unaccent) over
    `search_vector` (kept by a trigger from `search_text`), or'ed with pg_trgm word similarity for typos and codes.

    The statement ranks its rows by the full search score (policy.py's blend, _search_score_sql) and returns only the
    best `limit`: each row sent costs the client more than scoring it costs the server.

    The user's rows are found through `uq_memory_entries_user_id_key` (a user has at most
    STRATUS_MEMORY_MAX_PER_USER of them), so no full-text index spanning all users is needed. The trigram stage runs
    only for the query's words that none of the searched memories knows, and only on the rows that a TrigramScreen
    lets through (a trigram index would spare that work but costs every store far more: migration 0004 says by how
    much). Prepared statements on the driver, one for each number of trigram terms: this is a hot path
    (kit/driver.py)."""

    RANK_HALF = 0.1
    """ts_rank_cd of one matched word (with no length normalization): maps to a lexical score of 0.5."""
    TRIGRAM_THRESHOLD = 0.6
    """A term matches a text whose word_similarity with it is at least this (pg_trgm's default for `%>`, which the
    statements do not use: the server's setting changes nothing)."""
    MIN_TRIGRAM_TERM = 4
    """Shorter words are left to full text: their few trigrams match almost anything."""
    MAX_TRIGRAM_TERMS = 4
    """Each compared term costs a comparison per row: the longest few carry the typos and codes worth finding."""

    _SEARCHED = """m.user_id = $1
                  AND (m.expires_at IS NULL OR m.expires_at > $3)
                  AND ($4::text[] IS NULL OR m.memory_type = ANY($4::text[]))
                  AND ($5::float8 IS NULL OR m.importance_score >= $5)"""
    _HITS = f"""
                -- The user's searched rows that match the query, with their rank.
                SELECT {_columns_of("m")}, m.search_vector, ts_rank_cd(m.search_vector, query) AS rank
                FROM memory_entries AS m CROSS JOIN to_tsquery('stratus_portuguese'::regconfig, $2) AS query
                WHERE {_SEARCHED}
                  AND m.search_vector @@ query"""
    _FIRST_TERM_PARAMETER = 10
    """Each trigram term takes four parameters from here on: the term, then its screen's any_of, pieces, needed."""
    _BEST_FIRST = f"""
            ORDER BY {_search_score_sql("found", now="$3", half_life_s="$8")} DESC,
                     found.memory_type <> 'critical',
                     found.key COLLATE "C"
            LIMIT $7"""
    """The order of MemoryManager._rank (critical first among equal scores, then key in code point order, which is
    what the C collation compares)."""

    @classmethod
    def sql_for(cls, typo_terms: int) -> str:
        """The search statement for a query with `typo_terms` trigram terms (their parameters after the nine
        common ones: user, tsquery, now, tiers, min_importance, RANK_HALF, limit, recency half-life in seconds,
        TRIGRAM_THRESHOLD)."""
        if typo_terms == 0:
            return f"""
            SELECT {_columns_of("found")}, found.lexical
            FROM (
                SELECT {", ".join(_ENTRY_COLUMNS)}, rank / (rank + $6) AS lexical
                FROM ({cls._HITS}
                ) AS hits
            ) AS found{cls._BEST_FIRST}
            """
        slots = range(typo_terms)
        first = [cls._FIRST_TERM_PARAMETER + 4 * slot for slot in slots]
        unknown = ",\n                       ".join(
            # A stop word ("para", "como") has an empty tsquery: no row knows it, but it is no typo either.
            f"NOT coalesce(bool_or(hits.search_vector @@ term_query_{slot}), false)"
            f" AND numnode(to_tsquery('stratus_portuguese'::regconfig, ${first[slot]})) > 0 AS term_{slot}"
            for slot in slots
        )
        term_queries = "".join(
            f"\n                     CROSS JOIN to_tsquery('stratus_portuguese'::regconfig, ${first[slot]})"
            f" AS term_query_{slot}"
            for slot in slots
        )
        similarities = ",".join(
            f"""
                        CASE WHEN unknown.term_{slot} AND m.search_text LIKE ANY (${first[slot] + 1}::text[]) THEN
                            CASE WHEN (SELECT count(*) FROM unnest(${first[slot] + 2}::text[]) AS piece
                                       WHERE strpos(m.search_text, piece) > 0) >= ${first[slot] + 3}::int
                            THEN word_similarity(${first[slot]}, m.search_text) END
                        END"""
            for slot in slots
        )
        any_unknown = " OR ".join(f"unknown.term_{slot}" for slot in slots)
        return f"""
            WITH hits AS MATERIALIZED ({cls._HITS}
            ),
            unknown AS MATERIALIZED (
                -- For each trigram term, whether no searched row knows it as a word. Only hits can: a row that
                -- matches a term matches the query, which or's the terms.
                SELECT {unknown}
                FROM hits{term_queries}
            ),
            typos AS MATERIALIZED (
                -- The rows an unknown term may be a typo or a code of: each term's screen first, word_similarity
                -- only for the rows it lets through; the best term counts, from the threshold up. Read only when
                -- a term is unknown.
                SELECT *
                FROM (
                    SELECT {_columns_of("m")}, greatest({similarities}
                    ) AS similarity
                    FROM unknown JOIN memory_entries AS m ON ({any_unknown}) AND {cls._SEARCHED}
                    -- A fence: merged into the outer query, each similarity would be computed once per mention.
                    OFFSET 0
                ) AS compared
                WHERE similarity >= $9
            )
            SELECT {_columns_of("found")}, found.lexical
            FROM (
                SELECT {_columns_of("hits")},
                       greatest(hits.rank / (hits.rank + $6), coalesce(typos.similarity, 0)) AS lexical
                FROM hits LEFT JOIN typos USING (memory_id)
                UNION ALL
                SELECT {_columns_of("typos")}, typos.similarity
                FROM typos
                WHERE NOT EXISTS (SELECT FROM hits WHERE hits.memory_id = typos.memory_id)
            ) AS found{cls._BEST_FIRST}
            """

    def __init__(self, recency_half_life: timedelta) -> None:
        self._half_life_s = recency_half_life.total_seconds()
        self._statements = [self.sql_for(count) for count in range(self.MAX_TRIGRAM_TERMS + 1)]

    async def search(
        self,
        op: Operation,
        terms: list[str],
        filters: SearchFilters,
        limit: int,
        *,
        tx: AsyncConnection | None,
    ) -> list[MemoryCandidate]:
        """The best `limit` memories by search score, ranked in the statement: only they cross the wire."""
        sql, arguments = self.statement(terms, filters, limit)
        if tx is None:
            # One plain statement: it needs no SQLAlchemy Connection (Operation.fetch).
            rows = await op.fetch(sql, *arguments)
        else:
            rows = await op.run(
                lambda conn: driver.fetch(conn, sql, *arguments, read_only=True), tx=tx, single_statement=True
            )
        # The statement selects exactly MemoryCandidate's columns, by name.
        return [MemoryCandidate(**row) for row in rows]

    def statement(self, terms: list[str], filters: SearchFilters, limit: int) -> tuple[str, list[Any]]:
        """`search`'s statement and its arguments."""
        # The terms are words of letters and digits only (kit/text.py), so "a | b" and each single term are always
        # valid tsqueries, and never LIKE patterns.
        tiers = None if filters.memory_types is None else [tier.value for tier in filters.memory_types]
        typo_terms = sorted(
            (term for term in terms if len(term) >= self.MIN_TRIGRAM_TERM), key=len, reverse=True
        )[: self.MAX_TRIGRAM_TERMS]
        arguments: list[Any] = [
            filters.user_id,
            " | ".join(terms),
            filters.now,
            tiers,
            filters.min_importance,
            self.RANK_HALF,
            limit,
            self._half_life_s,
        ]
        if typo_terms:
            arguments.append(self.TRIGRAM_THRESHOLD)
            for term in typo_terms:
                screen = TrigramScreen.of(term, self.TRIGRAM_THRESHOLD)
                arguments += [term, screen.any_of, screen.pieces, screen.needed]
        return self._statements[len(typo_terms)], arguments


class SQLiteMemorySearch:
    """FTS5: a word index (accents removed) matched by Portuguese stem prefixes — "meteorológica" → meteorolog* —
    and a trigram index that finds rows sharing trigrams with a term. A trigram-only candidate counts when one of
    its words is as similar to a term as pg_trgm's default threshold demands (typos, codes). Both indexes hold each
    row's owner and are asked for the user's rows only (kit/text.py fts5_owned_query)."""

    POOL_FACTOR = 5
    MIN_POOL = 50
    """The best max(limit × 5, 50) rows by lexical score are returned, for the manager to rank by the full score
    (the blend may lift a weaker lexical match above a stronger one)."""
    WORD_HALF = 1.0
    TRIGRAM_WEIGHT = 0.8
    """A match found only through trigrams counts for less than a word match."""
    TRIGRAM_THRESHOLD = 0.5
    MAX_TRIGRAMS = 96

    def _trigram_query(self, terms: list[str]) -> str:
        grams = dict.fromkeys(
            term[i : i + 3] for term in terms if len(term) >= 3 for i in range(len(term) - 2)
        )
        return " OR ".join(f'"{gram}"' for gram in list(grams)[: self.MAX_TRIGRAMS])

    async def search(
        self,
        op: Operation,
        terms: list[str],
        filters: SearchFilters,
        limit: int,
        *,
        tx: AsyncConnection | None,
    ) -> list[MemoryCandidate]:
        return await op.run(
            lambda conn: self._candidates(conn, terms, filters, limit), tx=tx, single_statement=True
        )

    async def _candidates(
        self, conn: AsyncConnection, terms: list[str], filters: SearchFilters, limit: int
    ) -> list[MemoryCandidate]:
        # The owner's column weighs nothing in bm25: every row found matches it.
        hits = [
            "SELECT rowid, -bm25(memory_entries_fts, 1.0, 0.0) / (-bm25(memory_entries_fts, 1.0, 0.0) + :word_half) "
            "AS score FROM memory_entries_fts WHERE memory_entries_fts MATCH :word_query"
        ]
        params: dict[str, Any] = {
            "word_query": fts5_owned_query(filters.user_id, "search_text", fts5_stem_query(terms)),
            "word_half": self.WORD_HALF,
        }
        if trigram_query := self._trigram_query(terms):
            hits.append(
                "SELECT rowid, 0.0 AS score FROM memory_entries_fts_trigram "
                "WHERE memory_entries_fts_trigram MATCH :trigram_query"
            )
            params["trigram_query"] = fts5_owned_query(filters.user_id, "search_text", trigram_query)
        matches = (
            text(" UNION ALL ".join(hits))
            .columns(literal_column("rowid").label("rowid"), literal_column("score", Float).label("score"))
            # Materialized, so that bm25() runs in the scan of its FTS table: a lone branch merged into the query
            # below may have it called on a copied row, away from its match, which SQLite refuses ("unable to
            # use function bm25 in the requested context").
            .cte("matches")
            .prefix_with("MATERIALIZED")
        )
        best = (
            select(matches.c.rowid, func.max(matches.c.score).label("word_score"))
            .group_by(matches.c.rowid)
            .subquery("best")
        )
        rowid: ColumnElement[int] = literal_column("memory_entries.rowid")
        statement = (
            select(*(_memories.c[name] for name in _ENTRY_COLUMNS), MemoryRow.search_text, best.c.word_score)
            .join(best, best.c.rowid == rowid)
            .where(
                MemoryRow.user_id == bindparam("owner", filters.user_id, type_=Uuid()),
                or_(
                    MemoryRow.expires_at.is_(None),
                    MemoryRow.expires_at > bindparam("now", filters.now, type_=UTCDateTime()),
                ),
            )
            .order_by(best.c.word_score.desc())
            .limit(max(limit * self.POOL_FACTOR, self.MIN_POOL))
        )
        result = await conn.execute(_filtered(statement, filters), params)
        candidates = []
        for *entry, searched_text, word_score in result:
            similarity = best_word_similarity(terms, searched_text)
            trigram = self.TRIGRAM_WEIGHT * similarity if similarity >= self.TRIGRAM_THRESHOLD else 0.0
            lexical = max(float(word_score), trigram)
            if lexical > 0:
                candidates.append(MemoryCandidate._make((*entry, lexical)))
        return candidates


def _filtered(statement: Select[Any], filters: SearchFilters) -> Select[Any]:
    if filters.memory_types is not None:
        statement = statement.where(MemoryRow.memory_type.in_(filters.memory_types))
    if filters.min_importance is not None:
        statement = statement.where(MemoryRow.importance_score >= filters.min_importance)
    return statement
