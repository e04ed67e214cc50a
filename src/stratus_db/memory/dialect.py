"""What differs by database for memories, chosen once per manager: the search backend, the store batcher, and
whether a counted read may go alone. The manager asks this object, never the backend's name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stratus_db.memory.coalescing import StoreCoalescer
from stratus_db.memory.policy import MemoryPolicy
from stratus_db.memory.search import MemorySearchBackend, PostgresMemorySearch, SQLiteMemorySearch

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration


@dataclass(frozen=True)
class MemoryDialect:
    search: MemorySearchBackend
    coalescer: StoreCoalescer | None
    """Concurrent stores written together (PostgreSQL); SQLite's one writer at a time leaves nothing to share."""
    reads_alone: bool
    """A counted read that slides no expiry is one plain statement on a pooled connection (PostgreSQL)."""


def memory_dialect_for(db: StratusPostgreSQLIntegration, policy: MemoryPolicy) -> MemoryDialect:
    if db.backend == "postgresql":
        return MemoryDialect(
            search=PostgresMemorySearch(policy.recency_half_life),
            coalescer=StoreCoalescer.of(db),
            reads_alone=not policy.reads_slide,
        )
    return MemoryDialect(search=SQLiteMemorySearch(), coalescer=None, reads_alone=False)
