"""search_messages: PostgreSQL and SQLite full text side by side behind one small interface.

Each backend returns the user's messages that match any of the query's words, in conversations that are not
deleted, with a relevance in [0, 1), best first (newer first among equals).
"""

from __future__ import annotations

import uuid
from typing import NamedTuple, Protocol

from sqlalchemy import Float, Integer, Uuid, bindparam, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.conversations.repository import STORED_MESSAGE_COLUMNS, StoredMessage
from stratus_db.kit import driver
from stratus_db.kit.text import fts5_owned_query, fts5_stem_query
from stratus_db.models import ConversationRow, ConversationStatus, MessageRow


class MessageMatch(NamedTuple):
    message: StoredMessage
    score: float
    """The relevance, in [0, 1)."""


class MessageSearchBackend(Protocol):
    async def matches(
        self, conn: AsyncConnection, user_id: uuid.UUID, terms: list[str], limit: int
    ) -> list[MessageMatch]:
        """Up to `limit` messages, best first."""


class PostgresMessageSearch:
    """`stratus_portuguese` full text (Portuguese stems after unaccent) over the stored `search_vector`, found
    through the (user_id, search_vector) GIN index; ranked by ts_rank_cd (more and closer matched words rank higher)."""

    RANK_HALF = 0.1
    """ts_rank_cd of one matched word: maps to a score of 0.5."""
    SQL = f"""
        SELECT {", ".join(f"m.{name}" for name in StoredMessage._fields)},
               ts_rank_cd(m.search_vector, query) / (ts_rank_cd(m.search_vector, query) + $3) AS score
        FROM messages AS m
        JOIN conversations AS c ON c.conversation_id = m.conversation_id AND c.user_id = m.user_id,
             to_tsquery('stratus_portuguese'::regconfig, $2) AS query
        WHERE m.user_id = $1 AND m.search_vector @@ query AND c.status <> 'deleted'
        ORDER BY score DESC, m.created_at DESC, m.message_id DESC
        LIMIT $4
    """
    """The terms are words of letters and digits only (kit/text.py), so "a | b" is always a valid tsquery."""

    async def matches(
        self, conn: AsyncConnection, user_id: uuid.UUID, terms: list[str], limit: int
    ) -> list[MessageMatch]:
        rows = await driver.fetch(
            conn, self.SQL, user_id, " | ".join(terms), self.RANK_HALF, limit, read_only=True
        )
        # Each row holds StoredMessage's columns in its order (SQL), then the score.
        return [
            MessageMatch(StoredMessage(*message), score) for *message, score in (row.values() for row in rows)
        ]


class SQLiteMessageSearch:
    """FTS5 word index (accents removed) matched by Portuguese stem prefixes — "meteorológica" → meteorolog* —
    ranked by bm25. The index holds each message's owner and is asked for the user's messages only
    (kit/text.py fts5_owned_query)."""

    BM25_HALF = 1.0

    async def matches(
        self, conn: AsyncConnection, user_id: uuid.UUID, terms: list[str], limit: int
    ) -> list[MessageMatch]:
        hits = (
            text(
                # The owner's column weighs nothing in bm25: every message found matches it.
                "SELECT rowid, -bm25(messages_fts, 1.0, 0.0) / (-bm25(messages_fts, 1.0, 0.0) + :half) AS score "
                "FROM messages_fts WHERE messages_fts MATCH :query"
            )
            .columns(
                literal_column("rowid", Integer).label("rowid"), literal_column("score", Float).label("score")
            )
            # Materialized, so that bm25() runs in the scan of its FTS table, whatever plan SQLite picks for the
            # rest (called on a copied row, away from its match, it fails: memory/search.py).
            .cte("hits")
            .prefix_with("MATERIALIZED")
        )
        statement = (
            select(*STORED_MESSAGE_COLUMNS, hits.c.score)
            .join(hits, hits.c.rowid == literal_column("messages.rowid"))
            .join(
                ConversationRow,
                (ConversationRow.conversation_id == MessageRow.conversation_id)
                & (ConversationRow.user_id == MessageRow.user_id),
            )
            .where(
                MessageRow.user_id == bindparam("owner", user_id, type_=Uuid()),
                ConversationRow.status != ConversationStatus.deleted,
            )
            .order_by(hits.c.score.desc(), MessageRow.created_at.desc(), MessageRow.message_id.desc())
            .limit(limit)
        )
        query = fts5_owned_query(user_id, "content", fts5_stem_query(terms))
        result = await conn.execute(statement, {"query": query, "half": self.BM25_HALF})
        return [MessageMatch(StoredMessage(*message), score) for *message, score in result]
