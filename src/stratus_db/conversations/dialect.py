"""What differs by database for conversations, chosen once per manager: the message search backend and the append
batcher. The rooms ask this object, never the backend's name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratus_db.conversations.coalescing import AppendCoalescer
from stratus_db.conversations.search import MessageSearchBackend, PostgresMessageSearch, SQLiteMessageSearch

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration


@dataclass(frozen=True)
class ConversationDialect:
    search: MessageSearchBackend
    appends: AppendCoalescer | None
    """Concurrent appends written together (PostgreSQL); SQLite's one writer at a time leaves nothing to share."""


def conversation_dialect_for(db: StratusPostgreSQLIntegration) -> ConversationDialect:
    if db.backend == "postgresql":
        return ConversationDialect(search=PostgresMessageSearch(), appends=AppendCoalescer.of(db))
    return ConversationDialect(search=SQLiteMessageSearch(), appends=None)
