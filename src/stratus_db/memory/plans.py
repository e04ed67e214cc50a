"""What a memory write writes, decided in pure code (no I/O) and once for every path.

`MemoryPlanner.store` turns a validated store and the row it finds (or none) into a plan: nothing to write
(`Unchanged`), a new memory (`NewMemory`, possibly in place of an expired one) or a change (`MemoryChange`), each with
its audit entry; the memory's cache key is what every plan invalidates and notifies. The executor (memory/writes.py)
sends a plan through Core in a transaction, or batched with other callers' plans on PostgreSQL: both write exactly
what the plan says. Promotion, eviction, deletion and the purge have their plans here too, and the tiers, expiry,
promotion and the per-user cap are decided by the policy (memory/policy.py) that both paths consult.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from stratus_db.audit.manager import same_value
from stratus_db.audit.rows import AuditContext, AuditEntry
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.text import search_text
from stratus_db.memory.policy import MemoryPolicy, PromotionRule, frequency, recency, standing
from stratus_db.memory.schemas import MemoryEntry, MemoryStore
from stratus_db.models import MemoryType

TABLE = "memory_entries"
DEFAULT_IMPORTANCE = 0.5
"""Importance of a new memory stored without one."""
_STORED = ("value", "memory_type", "importance_score", "expires_at", "sensitive")
"""The columns a store decides; its audit row lists those that change."""


class StoredColumns(NamedTuple):
    """What a store writes over a memory: the columns it decides, and the search text and time that follow."""

    value: Any
    memory_type: MemoryType
    importance_score: float
    expires_at: datetime | None
    sensitive: bool
    search_text: str
    updated_at: datetime


class Unchanged(NamedTuple):
    """Storing exactly what is stored: nothing to write, nothing to audit."""

    entry: MemoryEntry


class NewMemory(NamedTuple):
    """A memory to insert under a key the user does not have, or in place of `replacing`, an expired memory under
    the key (a new id, so that counts buffered for the old one never reach it)."""

    entry: MemoryEntry
    search_text: str
    audit: AuditEntry
    replacing: MemoryEntry | None = None

    @property
    def meets_cap(self) -> bool:
        """Whether the per-user cap must be checked after it: every tier but critical counts towards it."""
        return self.entry.memory_type != MemoryType.critical


class MemoryChange(NamedTuple):
    """A store over the live memory `previous`: the columns to write and its audit entry (the changed fields' old
    and new values)."""

    previous: MemoryEntry
    columns: StoredColumns
    audit: AuditEntry

    @property
    def meets_cap(self) -> bool:
        """Whether it moves the memory out of the critical tier: from then on it counts towards the cap."""
        return (
            self.previous.memory_type == MemoryType.critical
            and self.columns.memory_type != MemoryType.critical
        )


Seal = Callable[[Any, uuid.UUID], str]
"""Encrypts a sensitive memory's value for its row (memory_id) under the owner's data key (memory/writes.py)."""
StorePlan = Unchanged | NewMemory | MemoryChange
"""Plans are NamedTuples: one is made per store, and a frozen dataclass costs four times as much to make."""


class Promotion(NamedTuple):
    """A memory read often enough moves to `target`; its expiry only ever lengthens."""

    entry: MemoryEntry
    target: MemoryType
    expires_at: datetime | None
    updated_at: datetime
    audit: AuditEntry


class EvictionCandidate(NamedTuple):
    """What eviction ranks a memory by."""

    memory_id: uuid.UUID
    importance_score: float
    access_count: int
    updated_at: datetime
    last_accessed_at: datetime | None


class MemoryPlanner:
    """The decisions of every memory write, from the configured policy."""

    def __init__(self, policy: MemoryPolicy) -> None:
        self.policy = policy

    def store(
        self,
        data: MemoryStore,
        stored: MemoryEntry | None,
        now: datetime,
        *,
        memory_id: uuid.UUID,
        context: AuditContext,
        seal: Seal | None = None,
    ) -> StorePlan:
        """What storing `data` writes over `stored`, the row under its key (None: there is none), at `now`.

        A new memory gets `memory_id` (a new id, never the expired one's it replaces). A memory gets its
        tier's default expiry unless `data` says otherwise, counted from `now`: storing again renews it. A sensitive
        store's value is written as `seal(value, memory_id)` makes it (required then), with no search text.

        Raises:
            ValidationError: `ttl` or `expires_at` for a memory that ends up critical; a store that is not sensitive
                over a sensitive memory.
        """
        if stored is None:
            return self._new(data, now, memory_id, context, seal)
        if stored.expires_at is not None and stored.expires_at <= now:
            return self._new(data, now, memory_id, context, seal, replacing=stored)
        if stored.sensitive and not data.sensitive:
            raise ValidationError(
                f"memory {data.key!r} is sensitive: store it with sensitive=True, or delete it first (its value is "
                "never written in clear over it)"
            )
        tier = data.memory_type or stored.memory_type
        importance = stored.importance_score if data.importance_score is None else data.importance_score
        value = _stored_value(data, stored.memory_id, seal)
        decided = (value, tier, importance, self._expiry(data, tier, now), data.sensitive)
        changed = [
            name
            for name, value in zip(_STORED, decided, strict=True)
            if not same_value(getattr(stored, name), value)
        ]
        if not changed:
            return Unchanged(stored)
        after = stored.model_copy(update=dict(zip(_STORED, decided, strict=True)))
        columns = StoredColumns(*decided, _search_text(data), now)
        audit = AuditEntry(
            action=AuditAction.update,
            table_name=TABLE,
            record_id=stored.memory_id,
            user_id=stored.user_id,
            timestamp=now,
            old_values=stored.model_dump(mode="json", include=set(changed)),
            new_values=after.model_dump(mode="json", include=set(changed)),
            context=context,
            audit_id=new_id(),
        )
        return MemoryChange(stored, columns, audit)

    def _expiry(self, data: MemoryStore, tier: MemoryType, now: datetime) -> datetime | None:
        if tier == MemoryType.critical and (data.ttl is not None or data.expires_at is not None):
            raise ValidationError("critical memories never expire: drop ttl and expires_at")
        if data.ttl is not None:
            return now + data.ttl
        if data.expires_at is not None:
            return data.expires_at  # in UTC already (a Timestamp), as stored and read back
        return self.policy.default_expiry(tier, now)

    def _new(
        self,
        data: MemoryStore,
        now: datetime,
        memory_id: uuid.UUID,
        context: AuditContext,
        seal: Seal | None,
        replacing: MemoryEntry | None = None,
    ) -> NewMemory:
        tier = data.memory_type or MemoryType.short_term
        entry = MemoryEntry(
            memory_id=memory_id,
            user_id=data.user_id,
            memory_type=tier,
            key=data.key,
            value=_stored_value(data, memory_id, seal),
            importance_score=DEFAULT_IMPORTANCE if data.importance_score is None else data.importance_score,
            access_count=0,
            expires_at=self._expiry(data, tier, now),
            created_at=now,
            updated_at=now,
            last_accessed_at=None,
            sensitive=data.sensitive,
        )
        audit = AuditEntry(
            action=AuditAction.create,
            table_name=TABLE,
            record_id=memory_id,
            user_id=data.user_id,
            timestamp=now,
            old_values=None if replacing is None else replacing.model_dump(mode="json"),
            new_values=entry.model_dump(mode="json"),
            context=context,
            audit_id=new_id(),
        )
        return NewMemory(entry, _search_text(data), audit, replacing)

    def promotion(
        self, entry: MemoryEntry, rule: PromotionRule, now: datetime, context: AuditContext
    ) -> Promotion:
        """`entry` promoted by `rule` at `now`."""
        tier_expiry = self.policy.default_expiry(rule.target, now)
        if entry.expires_at is None or tier_expiry is None:
            expiry = None
        else:
            expiry = max(entry.expires_at, tier_expiry)
        promoted = entry.model_copy(update={"memory_type": rule.target, "expires_at": expiry})
        audit = AuditEntry(
            action=AuditAction.promote,
            table_name=TABLE,
            record_id=entry.memory_id,
            user_id=entry.user_id,
            timestamp=now,
            old_values=entry.model_dump(mode="json", include={"memory_type", "expires_at", "access_count"}),
            new_values=promoted.model_dump(mode="json", include={"memory_type", "expires_at"}),
            context=context,
            audit_id=new_id(),
        )
        return Promotion(entry, rule.target, expiry, now, audit)

    def evictions(
        self, candidates: Iterable[EvictionCandidate], excess: int, now: datetime
    ) -> list[uuid.UUID]:
        """The `excess` least valuable of `candidates` (by standing, then id), to evict."""

        def value_of(candidate: EvictionCandidate) -> tuple[float, uuid.UUID]:
            last_used = candidate.last_accessed_at or candidate.updated_at
            score = standing(
                candidate.importance_score,
                recency(last_used, now, self.policy.recency_half_life),
                frequency(candidate.access_count),
            )
            return score, candidate.memory_id

        return [candidate.memory_id for candidate in sorted(candidates, key=value_of)[:excess]]


def _stored_value(data: MemoryStore, memory_id: uuid.UUID, seal: Seal | None) -> Any:
    """What the row holds as the value: the value, or for a sensitive store its token for this row."""
    if not data.sensitive:
        return data.value
    assert seal is not None, "a sensitive store is planned with a seal"
    return seal(data.value, memory_id)


def _search_text(data: MemoryStore) -> str:
    """The words search finds the memory by: none for a sensitive memory (left out of search)."""
    return "" if data.sensitive else search_text(data.key, data.value)


def removal_audit(
    action: AuditAction, entry: MemoryEntry, now: datetime, context: AuditContext
) -> AuditEntry:
    """The audit entry of a memory deleted or evicted: it keeps what was removed."""
    return AuditEntry(
        action=action,
        table_name=TABLE,
        record_id=entry.memory_id,
        user_id=entry.user_id,
        timestamp=now,
        old_values=entry.model_dump(mode="json"),
        new_values=None,
        context=context,
        audit_id=new_id(),
    )


def purge_audit(
    owner: uuid.UUID, purged: Sequence[tuple[uuid.UUID, str]], now: datetime, context: AuditContext
) -> AuditEntry:
    """The one audit entry of a user's expired memories purged in a batch: their ids and keys."""
    return AuditEntry(
        action=AuditAction.purge,
        table_name=TABLE,
        record_id=None,
        user_id=owner,
        timestamp=now,
        old_values={
            "memory_ids": [str(memory_id) for memory_id, _key in purged],
            "keys": [key for _memory_id, key in purged],
        },
        new_values=None,
        context=context,
        audit_id=new_id(),
    )
