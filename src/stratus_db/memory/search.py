"""Lexical candidates for search_memories: PostgreSQL and SQLite side by side behind one small interface.

Each backend returns the user's live memories that match the query's words, with a lexical relevance in [0, 1],
best first; the manager blends it with importance, recency and frequency (memory/policy.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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
from stratus_db.kit.text import best_word_similarity, fts5_stem_query
from stratus_db.kit.types import UTCDateTime
from stratus_db.models import MemoryEntry, MemoryType

_memories = table_of(MemoryEntry)


@dataclass(frozen=True)
class SearchFilters:
    user_id: uuid.UUID
    memory_types: tuple[MemoryType, ...] | None
    min_importance: float | None
    now: datetime


class MemorySearchBackend(Protocol):
    async def candidates(
        self, conn: AsyncConnection, terms: list[str], filters: SearchFilters, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows of memory_entries plus a `lexical` score in [0, 1], best first."""


class PostgresMemorySearch:
    """Full text with the `stratus_portuguese` configuration (portuguese stemming after unaccent) over
    `search_vector` (kept by a trigger from `search_text`), or'ed with pg_trgm word similarity for typos and codes.

    The user's rows are found through `uq_memory_entries_user_id_key` (a user has at most
    STRATUS_MEMORY_MAX_PER_USER of them), so no full-text index spanning all users is needed. The trigram stage runs
    only for the query's words that none of the searched memories knows, and compares them with the user's rows (a
    trigram index would spare that work but costs every store far more: migration 0004 says by how much). A prepared
    statement on the driver: this is a hot path (kit/driver.py)."""

    RANK_HALF = 0.1
    """ts_rank_cd of one matched word (with no length normalization): maps to a lexical score of 0.5."""
    TRIGRAM_THRESHOLD = 0.6
    """A term matches a text whose word_similarity with it is at least this. The `%>` operator uses the server's
    pg_trgm.word_similarity_threshold, whose default is this value: the statement checks the constant again, so a
    lower server setting only costs time, a higher one would hide matches (tests check the default)."""
    MIN_TRIGRAM_TERM = 4
    """Shorter words are left to full text: their few trigrams match almost anything."""
    MAX_TRIGRAM_TERMS = 4
    """Each compared term costs a comparison per row: the longest few carry the typos and codes worth finding."""

    # One `%>` per term slot: a missing term is NULL, which matches nothing at no cost.
    _SIMILAR_TO_A_TERM = " OR ".join(
        f"m.search_text %> u.terms[{slot}]" for slot in range(1, MAX_TRIGRAM_TERMS + 1)
    )
    _SEARCHED = """m.user_id = $1
              AND (m.expires_at IS NULL OR m.expires_at > $4)
              AND ($5::text[] IS NULL OR m.memory_type = ANY($5::text[]))
              AND ($6::float8 IS NULL OR m.importance_score >= $6)"""

    SQL = f"""
        WITH terms AS MATERIALIZED (
            -- Each term's tsquery is built once, not once for every row it is checked against.
            SELECT term, to_tsquery('stratus_portuguese'::regconfig, term) AS query FROM unnest($3::text[]) AS term
        ),
        unmatched AS MATERIALIZED (
            -- Words the searched memories already know need no typo matching; only the rest are compared by trigram.
            SELECT coalesce(array_agg(t.term), '{{}}') AS terms
            FROM terms AS t
            WHERE NOT EXISTS (
                SELECT 1 FROM memory_entries AS m WHERE {_SEARCHED} AND m.search_vector @@ t.query
            )
        ),
        alike AS MATERIALIZED (
            -- The user's rows word-similar to an unknown term (the `%>` test), with their best similarity.
            SELECT m.memory_id,
                   (SELECT max(word_similarity(term, m.search_text)) FROM unnest(u.terms) AS term) AS similarity
            FROM memory_entries AS m, unmatched AS u
            WHERE m.user_id = $1 AND ({_SIMILAR_TO_A_TERM})
        )
        SELECT memory_id, user_id, memory_type, key, value, importance_score, access_count, expires_at,
               created_at, updated_at, last_accessed_at,
               greatest(rank / (rank + $7), coalesce(similarity, 0)) AS lexical
        FROM (
            SELECT m.*, ts_rank_cd(m.search_vector, query) AS rank, s.similarity
            FROM memory_entries AS m
                 CROSS JOIN to_tsquery('stratus_portuguese'::regconfig, $2) AS query
                 LEFT JOIN alike AS s ON s.memory_id = m.memory_id
            WHERE {_SEARCHED}
              AND (m.search_vector @@ query OR s.similarity >= $9)
        ) AS scored
        ORDER BY lexical DESC
        LIMIT $8
    """
    """Each unknown term is compared on its own (a typo among other words still counts); a similarity counts from
    the threshold up. The terms are words of letters and digits only (kit/text.py), so "a | b" and each single term
    are always valid tsqueries."""

    async def candidates(
        self, conn: AsyncConnection, terms: list[str], filters: SearchFilters, limit: int
    ) -> list[dict[str, Any]]:
        tiers = None if filters.memory_types is None else [tier.value for tier in filters.memory_types]
        return await driver.fetch(
            conn,
            self.SQL,
            filters.user_id,
            " | ".join(terms),
            sorted((term for term in terms if len(term) >= self.MIN_TRIGRAM_TERM), key=len, reverse=True)[
                : self.MAX_TRIGRAM_TERMS
            ],
            filters.now,
            tiers,
            filters.min_importance,
            self.RANK_HALF,
            limit,
            self.TRIGRAM_THRESHOLD,
            read_only=True,
        )


class SQLiteMemorySearch:
    """FTS5: a word index (accents removed) matched by Portuguese stem prefixes — "meteorológica" → meteorolog* —
    and a trigram index that finds rows sharing trigrams with a term. A trigram-only candidate counts when one of
    its words is as similar to a term as pg_trgm's default threshold demands (typos, codes)."""

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

    async def candidates(
        self, conn: AsyncConnection, terms: list[str], filters: SearchFilters, limit: int
    ) -> list[dict[str, Any]]:
        hits = [
            "SELECT rowid, -bm25(memory_entries_fts) / (-bm25(memory_entries_fts) + :word_half) AS score "
            "FROM memory_entries_fts WHERE memory_entries_fts MATCH :word_query"
        ]
        params: dict[str, Any] = {"word_query": fts5_stem_query(terms), "word_half": self.WORD_HALF}
        if trigram_query := self._trigram_query(terms):
            hits.append(
                "SELECT rowid, 0.0 AS score FROM memory_entries_fts_trigram "
                "WHERE memory_entries_fts_trigram MATCH :trigram_query"
            )
            params["trigram_query"] = trigram_query
        matches = (
            text(" UNION ALL ".join(hits))
            .columns(literal_column("rowid").label("rowid"), literal_column("score", Float).label("score"))
            .subquery("matches")
        )
        best = (
            select(matches.c.rowid, func.max(matches.c.score).label("word_score"))
            .group_by(matches.c.rowid)
            .subquery("best")
        )
        rowid: ColumnElement[int] = literal_column("memory_entries.rowid")
        statement = (
            select(_memories, best.c.word_score)
            .join(best, best.c.rowid == rowid)
            .where(
                MemoryEntry.user_id == bindparam("owner", filters.user_id, type_=Uuid()),
                or_(
                    MemoryEntry.expires_at.is_(None),
                    MemoryEntry.expires_at > bindparam("now", filters.now, type_=UTCDateTime()),
                ),
            )
            .order_by(best.c.word_score.desc())
            .limit(limit)
        )
        result = await conn.execute(_filtered(statement, filters), params)
        rows = []
        for row in result.mappings():
            similarity = best_word_similarity(terms, row["search_text"])
            trigram = self.TRIGRAM_WEIGHT * similarity if similarity >= self.TRIGRAM_THRESHOLD else 0.0
            lexical = max(float(row["word_score"]), trigram)
            if lexical > 0:
                rows.append(dict(row) | {"lexical": lexical})
        return sorted(rows, key=lambda row: -row["lexical"])


def _filtered(statement: Select[Any], filters: SearchFilters) -> Select[Any]:
    if filters.memory_types is not None:
        statement = statement.where(MemoryEntry.memory_type.in_(filters.memory_types))
    if filters.min_importance is not None:
        statement = statement.where(MemoryEntry.importance_score >= filters.min_importance)
    return statement


def search_backend_for(dialect: str) -> MemorySearchBackend:
    return PostgresMemorySearch() if dialect == "postgresql" else SQLiteMemorySearch()
