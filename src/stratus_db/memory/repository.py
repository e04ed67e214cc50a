"""All SQL on memory_entries, scoped to one user: every statement carries the owner's filter."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import ColumnElement, Executable, and_, case, delete, func, literal, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.rows import AUDIT_INPUT, insert_audit_rows
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import DecryptionError, NotFoundError, Violation
from stratus_db.kit import driver
from stratus_db.kit.failures import violation_of
from stratus_db.kit.models import table_of
from stratus_db.kit.sql import BatchColumns, insert_for
from stratus_db.kit.types import UTCDateTime
from stratus_db.memory.plans import EvictionCandidate, MemoryChange, NewMemory, Promotion, StoredColumns
from stratus_db.memory.schemas import MemoryEntry
from stratus_db.models import MemoryRow, MemoryType, UserRow
from stratus_db.security.personal import PersonalData

if TYPE_CHECKING:
    from stratus_db.database import Operation

_memories = table_of(MemoryRow)
_PG_READ_AND_COUNT = """-- read_and_count on PostgreSQL without sliding tiers: the same statement the Core branch builds

UPDATE memory_entries SET access_count = access_count + 1, last_accessed_at = $3
WHERE user_id = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)
RETURNING memory_id, user_id, memory_type, key, value, importance_score, access_count, expires_at, created_at,
          updated_at, last_accessed_at, sensitive
"""


def entry_of(row: Mapping[str, Any] | RowMapping) -> MemoryEntry:
    """A memory as the API returns it, from a row of memory_entries (extra columns ignored)."""
    return MemoryEntry.model_validate(row)


async def reveal(
    personal: PersonalData, conn: AsyncConnection, entries: list[MemoryEntry]
) -> list[MemoryEntry]:
    """`entries` with the values of the sensitive ones decrypted under their owner's data key.

    Raises:
        DecryptionError: a value was altered, moved from another row, or its owner's key is gone.
    """
    revealed = []
    for entry in entries:
        if entry.sensitive:
            data_key = await personal.key_of(conn, entry.user_id)
            if data_key is None:
                raise DecryptionError(
                    f"memory {entry.memory_id} is sensitive and its owner's data key is gone"
                )
            value = personal.open_memory_value(entry.value, entry.memory_id, data_key)
            entry = entry.model_copy(update={"value": value})
        revealed.append(entry)
    return revealed


async def read_and_count_on_its_own(
    op: Operation, user_id: uuid.UUID, key: str, now: datetime
) -> MemoryEntry | None:
    """`MemoryRepository.read_and_count` outside any transaction, on PostgreSQL when no tier slides: the cold
    get_memory's statement on a pooled driver connection of its own (`Operation.fetch`), one round trip."""
    rows = await op.fetch(_PG_READ_AND_COUNT, user_id, key, now)
    return entry_of(rows[0]) if rows else None


_RETURNED = [column for column in _memories.c if column.name in MemoryEntry.model_fields]
"""The columns a MemoryEntry is made of: every statement returning memories returns these (not search_text)."""


class MemoryRepository:
    def __init__(self, conn: AsyncConnection, user_id: uuid.UUID) -> None:
        self.conn = conn
        self.user_id = user_id

    @cached_property
    def _owned(self) -> ColumnElement[bool]:
        # Built on first use: the driver's hot paths never need it, and building it cost a cold read a fifth of its
        # Python time.
        return MemoryRow.user_id == self.user_id

    def _live(self, now: datetime) -> ColumnElement[bool]:
        return or_(MemoryRow.expires_at.is_(None), MemoryRow.expires_at > now)

    async def _one(self, statement: Executable) -> MemoryEntry | None:
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else entry_of(row)

    async def _all(self, statement: Executable) -> list[MemoryEntry]:
        return [entry_of(row) for row in (await self.conn.execute(statement)).mappings()]

    async def get_for_update(self, key: str) -> MemoryEntry | None:
        return await self._one(select(*_RETURNED).where(self._owned, MemoryRow.key == key).with_for_update())

    async def insert_if_absent(self, new: NewMemory) -> MemoryEntry | None:
        """Insert a new key; None if a concurrent transaction created it since we looked (no error, no retry)."""
        statement = (
            insert_for(self.conn, _memories)
            .values(new.entry.model_dump() | {"search_text": new.search_text})
            .on_conflict_do_nothing(index_elements=["user_id", "key"])
            .returning(*_RETURNED)
        )
        try:
            return await self._one(statement)
        except IntegrityError as exc:
            if violation_of(exc) is Violation.foreign_key:
                raise NotFoundError(f"user {self.user_id} does not exist") from exc
            raise

    async def replace(self, new: NewMemory, expired: MemoryEntry) -> MemoryEntry:
        """Write the new memory `new` over the row of the expired memory `expired` (its key), id included."""
        return await self._set(expired.memory_id, new.entry.model_dump() | {"search_text": new.search_text})

    async def write_columns(self, memory_id: uuid.UUID, columns: StoredColumns) -> MemoryEntry:
        return await self._set(memory_id, columns._asdict())

    async def promote(self, promotion: Promotion) -> MemoryEntry:
        return await self._set(
            promotion.entry.memory_id,
            {
                "memory_type": promotion.target,
                "expires_at": promotion.expires_at,
                "updated_at": promotion.updated_at,
            },
        )

    async def _set(self, memory_id: uuid.UUID, values: dict[str, Any]) -> MemoryEntry:
        statement = (
            update(_memories)
            .where(self._owned, MemoryRow.memory_id == memory_id)
            .values(**values)
            .returning(*_RETURNED)
        )
        entry = await self._one(statement)
        assert entry is not None, "the row is locked by this transaction"
        return entry

    async def read_and_count(
        self, key: str, now: datetime, slide_to: dict[MemoryType, datetime]
    ) -> MemoryEntry | None:
        """The live memory, with its access counted, in one statement (the increment is atomic in SQL).

        `slide_to` maps sliding tiers to the expiry a read extends them to; a later expiry is never shortened.
        """
        if not slide_to and self.conn.dialect.name == "postgresql":
            # The hottest read: a prepared statement on the driver (kit/driver.py says why).
            rows = await driver.fetch(self.conn, _PG_READ_AND_COUNT, self.user_id, key, now)
            return entry_of(rows[0]) if rows else None
        values: dict[str, Any] = {"access_count": MemoryRow.access_count + 1, "last_accessed_at": now}
        if slide_to:
            values["expires_at"] = case(
                *(
                    (
                        and_(MemoryRow.memory_type == tier, MemoryRow.expires_at < expiry),
                        literal(expiry, UTCDateTime()),
                    )
                    for tier, expiry in slide_to.items()
                ),
                else_=MemoryRow.expires_at,
            )
        return await self._one(
            update(_memories)
            .where(self._owned, MemoryRow.key == key, self._live(now))
            .values(**values)
            .returning(*_RETURNED)
        )

    async def lock_owner(self) -> None:
        """Serialize this user's cap enforcement: lock the user's row (SQLite's writers are serialized already).

        FOR NO KEY UPDATE: it excludes other cap checks of the user but not the KEY SHARE locks that foreign-key
        checks of concurrent inserts take, which FOR UPDATE would deadlock with.
        """
        statement = (
            select(UserRow.user_id).where(UserRow.user_id == self.user_id).with_for_update(key_share=True)
        )
        await self.conn.execute(statement)

    async def count_live(self, now: datetime, *, exclude_tier: MemoryType) -> int:
        statement = (
            select(func.count())
            .select_from(_memories)
            .where(self._owned, self._live(now), MemoryRow.memory_type != exclude_tier)
        )
        return int((await self.conn.execute(statement)).scalar_one())

    async def eviction_candidates(
        self, now: datetime, *, exclude_tier: MemoryType, keep: uuid.UUID
    ) -> list[EvictionCandidate]:
        """What eviction ranks: the user's live memories outside `exclude_tier`, except the one just stored."""
        statement = select(*(_memories.c[name] for name in EvictionCandidate._fields)).where(
            self._owned,
            self._live(now),
            MemoryRow.memory_type != exclude_tier,
            MemoryRow.memory_id != keep,
        )
        return [EvictionCandidate(*row) for row in await self.conn.execute(statement)]

    async def delete_ids(self, memory_ids: list[uuid.UUID]) -> list[MemoryEntry]:
        return await self._all(
            delete(_memories).where(self._owned, MemoryRow.memory_id.in_(memory_ids)).returning(*_RETURNED)
        )

    async def page(
        self, *, memory_type: MemoryType | None, after_key: str | None, limit: int, now: datetime
    ) -> list[MemoryEntry]:
        statement = (
            select(*_RETURNED).where(self._owned, self._live(now)).order_by(MemoryRow.key).limit(limit)
        )
        if memory_type is not None:
            statement = statement.where(MemoryRow.memory_type == memory_type)
        if after_key is not None:
            statement = statement.where(MemoryRow.key > after_key)
        return await self._all(statement)

    async def delete(self, key: str, now: datetime) -> MemoryEntry | None:
        """Delete the live memory under `key` (an expired one is already gone for every reader; the purge takes it)."""
        return await self._one(
            delete(_memories).where(self._owned, MemoryRow.key == key, self._live(now)).returning(*_RETURNED)
        )


class PurgedMemory(NamedTuple):
    memory_id: uuid.UUID
    user_id: uuid.UUID
    key: str


class ExpiredMemoryRepository:
    """The one cross-user path on memory_entries: the purge of expired rows (bounded batches, no long locks)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def delete_batch(self, now: datetime, limit: int, *, keep_tier: MemoryType) -> list[PurgedMemory]:
        """Delete up to `limit` memories expired at `now` (never of `keep_tier`); return what was deleted."""
        batch = (
            select(MemoryRow.memory_id)
            .where(MemoryRow.expires_at <= now, MemoryRow.memory_type != keep_tier)
            .order_by(MemoryRow.expires_at)
            .limit(limit)
            # PostgreSQL: concurrent purgers split the work instead of waiting on each other (SQLite ignores it).
            .with_for_update(skip_locked=True)
        )
        statement = (
            delete(_memories)
            .where(MemoryRow.memory_id.in_(batch.scalar_subquery()))
            .returning(MemoryRow.memory_id, MemoryRow.user_id, MemoryRow.key)
        )
        return [PurgedMemory(*row) for row in await self.conn.execute(statement)]


# How the batch statements below (and the append batch, conversations/repository.py) are planned. The engine forces
# generic plans (kit/backends.py); a connection makes one the first time it sends a statement, often while the table
# is empty and has no statistics, and keeps it as the table grows (nothing analyzes it when autovacuum is off). So
# each statement is written to have one plan that is right at any size. A batch's arrays are read through `LIMIT $n`,
# their length: the planner cannot see an array's length in a generic plan and assumes ten rows, for which reading a
# small table whole and hashing it looked cheaper than ten lookups, a plan then kept for 100,000 rows; behind a limit
# it cannot see either, it plans for one row, a lookup by index. And each row is reached by a predicate that fits a
# unique index exactly. tests/test_database/test_plans.py checks their plans on empty, grown and analyzed tables.
_PG_READ_KEYS = """-- the coalesced store's read: the rows of many (user_id, key) pairs, each by uq_memory_entries_user_id_key

SELECT m.memory_id, m.user_id, m.memory_type, m.key, m.value, m.importance_score, m.access_count, m.expires_at,
       m.created_at, m.updated_at, m.last_accessed_at, m.sensitive
-- LIMIT $3, the arrays' length: planned as one lookup (see above)
FROM (SELECT * FROM unnest($1::uuid[], $2::text[]) AS w (user_id, key) LIMIT $3) AS wanted
JOIN memory_entries AS m ON m.user_id = wanted.user_id AND m.key = wanted.key
"""
_UPDATE_INPUT = (
    BatchColumns(
        (
            ("memory_id", "uuid"),
            ("user_id", "uuid"),
            ("key", "text"),
            ("value", "text"),
            ("memory_type", "text"),
            ("importance_score", "float8"),
            ("expires_at", "timestamptz"),
            ("search_text", "text"),
            ("read_value", "text"),
            ("read_memory_type", "text"),
            ("read_importance_score", "float8"),
            ("read_expires_at", "timestamptz"),
            ("notification", "text"),
        )
    )
    + AUDIT_INPUT
)
"""Each change of _PG_APPLY_UPDATES: an array per column, then $n: now, the channel, the count."""
_UPDATE_NOW, _UPDATE_CHANNEL, _UPDATE_COUNT = (f"${_UPDATE_INPUT.after(1) + offset}" for offset in range(3))
_UPDATES_AUDITED = insert_audit_rows(
    source="change AS c JOIN updated AS u ON u.memory_id = c.memory_id",
    action=AuditAction.update,
    table_name="memory_entries",
    user_id="c.user_id",
    record_id="c.memory_id",
    input_of="c.",
)
_PG_APPLY_UPDATES = f"""-- the coalesced store's write: updates with their audit rows and NOTIFYs, one statement for many callers

WITH change AS (
    SELECT *
    FROM {_UPDATE_INPUT.unnest(1)} AS c ({_UPDATE_INPUT.names})
    LIMIT {_UPDATE_COUNT}  -- the arrays' length: planned as one lookup (see above)
),
updated AS (
    UPDATE memory_entries AS m
    SET value = c.value::jsonb, memory_type = c.memory_type, importance_score = c.importance_score,
        expires_at = c.expires_at, search_text = c.search_text, updated_at = {_UPDATE_NOW}
    FROM change AS c
    -- Only a row that still holds what the change was decided on: otherwise its caller takes the locking path.
    -- Values compare as text: jsonb's = holds 1 and 1.0 equal, which the decision does not (audit.same_value).
    -- The key as well as the id: either unique index then finds the one row. Without statistics the planner cannot
    -- tell the primary key from the range of the owner's rows in uq_memory_entries_user_id_key, and took the range.
    WHERE m.memory_id = c.memory_id AND m.user_id = c.user_id AND m.key = c.key
      AND m.value::text = c.read_value::jsonb::text AND m.memory_type = c.read_memory_type
      AND m.importance_score = c.read_importance_score AND m.expires_at IS NOT DISTINCT FROM c.read_expires_at
    RETURNING m.memory_id, m.user_id, m.memory_type, m.key, m.value, m.importance_score, m.access_count,
              m.expires_at, m.created_at, m.updated_at, m.last_accessed_at, m.sensitive
),
audited AS (
    {_UPDATES_AUDITED}
)
-- NOTIFY is delivered when the statement commits, and only for the rows it changed.
SELECT u.*, pg_notify({_UPDATE_CHANNEL}, c.notification)::text AS notified
FROM updated AS u JOIN change AS c ON c.memory_id = u.memory_id
"""


# The coalesced store_memory path on PostgreSQL (memory/coalescing.py): many users' rows per statement, each addressed
# by its own owner — `(user_id, key)` or `(memory_id, user_id)` — so no row is reached without it. Statements and their
# arguments, for `Operation.fetch`.


def read_keys_statement(owners: list[uuid.UUID], keys: list[str]) -> tuple[str, tuple[Any, ...]]:
    """The rows stored under each (owners[i], keys[i]) that exists, expired or not."""
    return _PG_READ_KEYS, (owners, keys, len(owners))


def apply_updates_statement(
    changes: Sequence[tuple[MemoryChange, str]], *, now: datetime, channel: str
) -> tuple[str, tuple[Any, ...]]:
    """Write each change (with the payload of its NOTIFY on `channel`) whose memory still holds what the change was
    decided on (`updated_at = now`), with its audit entry, in one statement, which returns the updated rows (the
    others were changed meanwhile)."""
    rows = [
        {
            "memory_id": change.previous.memory_id,
            "user_id": change.previous.user_id,
            "key": change.previous.key,
            "value": json.dumps(change.columns.value),
            "memory_type": change.columns.memory_type.value,
            "importance_score": change.columns.importance_score,
            "expires_at": change.columns.expires_at,
            "search_text": change.columns.search_text,
            "read_value": json.dumps(change.previous.value),
            "read_memory_type": change.previous.memory_type.value,
            "read_importance_score": change.previous.importance_score,
            "read_expires_at": change.previous.expires_at,
            "notification": notification,
        }
        | change.audit.batch_input()
        for change, notification in changes
    ]
    return _PG_APPLY_UPDATES, (*_UPDATE_INPUT.arrays(rows), now, channel, len(rows))


_PG_LOCK_OWNERS = """-- the coalesced store's creations: bound the transaction's lock waits, lock the owners in one order

WITH bounded AS MATERIALIZED (SELECT set_config('lock_timeout', $2, true))
SELECT owner.user_id
FROM (SELECT * FROM unnest($1::uuid[]) AS w (user_id) LIMIT $3) AS wanted  -- the array's length: a lookup each
JOIN users AS owner ON owner.user_id = wanted.user_id
CROSS JOIN bounded
ORDER BY owner.user_id
FOR NO KEY UPDATE OF owner
"""
"""An owner whose row another transaction holds is checking its cap right now: most often the other batch in
flight, which commits within milliseconds, so this one waits its turn; but never longer than the lock_timeout, which
holds for the rest of the transaction (set_config's `is_local`): past it, the batch's creations take the locking path.
FOR NO KEY UPDATE, as `MemoryRepository.lock_owner`."""
_PG_COUNT_LIVE = """-- the coalesced store's creations: each locked owner's live memories that count towards the cap

SELECT m.user_id, count(*)::int AS live
FROM (SELECT * FROM unnest($1::uuid[]) AS o (user_id) LIMIT $4) AS owner  -- the array's length: one owner's rows each
JOIN memory_entries AS m ON m.user_id = owner.user_id
-- A test no index serves, so that only the owner's entries are read: `expires_at IS NULL OR …` matches
-- ix_memory_entries_expires_at, which a plan made without statistics combined with the owner's, i.e. read the entries
-- of every memory that never expires.
WHERE coalesce(m.expires_at, 'infinity') > $2 AND m.memory_type <> $3
GROUP BY m.user_id
"""
_CREATE_INPUT = (
    BatchColumns(
        (
            ("memory_id", "uuid"),
            ("user_id", "uuid"),
            ("memory_type", "text"),
            ("key", "text"),
            ("value", "text"),
            ("importance_score", "float8"),
            ("expires_at", "timestamptz"),
            ("search_text", "text"),
            ("notification", "text"),
        )
    )
    + AUDIT_INPUT
)
"""Each creation of _PG_CREATE: an array per column, then $n: now, the channel."""
_CREATE_NOW, _CREATE_CHANNEL = (f"${_CREATE_INPUT.after(1) + offset}" for offset in range(2))
_CREATES_AUDITED = insert_audit_rows(
    source="fresh AS f JOIN inserted AS i ON i.memory_id = f.memory_id",
    action=AuditAction.create,
    table_name="memory_entries",
    user_id="f.user_id",
    record_id="f.memory_id",
    input_of="f.",
)
_PG_CREATE = f"""-- the coalesced store's creations: new memories with their audit rows and NOTIFYs, one statement

WITH fresh AS (
    SELECT * FROM {_CREATE_INPUT.unnest(1)} AS f ({_CREATE_INPUT.names})
),
inserted AS (
    INSERT INTO memory_entries (memory_id, user_id, memory_type, key, value, importance_score, access_count,
                                expires_at, created_at, updated_at, last_accessed_at, search_text)
    SELECT memory_id, user_id, memory_type, key, value::jsonb, importance_score, 0, expires_at, {_CREATE_NOW},
           {_CREATE_NOW}, NULL, search_text
    FROM fresh
    -- A key created since the batch read it: its caller takes the locking path, which updates it.
    ON CONFLICT (user_id, key) DO NOTHING
    RETURNING memory_id, user_id, memory_type, key, value, importance_score, access_count, expires_at, created_at,
              updated_at, last_accessed_at, sensitive
),
audited AS (
    {_CREATES_AUDITED}
)
-- NOTIFY is delivered when the transaction commits, and only for the rows it created.
SELECT i.*, pg_notify({_CREATE_CHANNEL}, f.notification)::text AS notified
FROM inserted AS i JOIN fresh AS f ON f.memory_id = i.memory_id
"""


def lock_owners_statement(owners: list[uuid.UUID], *, lock_timeout: str) -> tuple[str, tuple[Any, ...]]:
    """Lock `owners` (those that exist), waiting at most `lock_timeout` (e.g. "50ms") for this and every later lock
    of the transaction; returns the locked owners' `user_id`."""
    return _PG_LOCK_OWNERS, (owners, lock_timeout, len(owners))


def count_live_statement(
    owners: list[uuid.UUID], now: datetime, *, exclude_tier: MemoryType
) -> tuple[str, tuple[Any, ...]]:
    """Each owner's live memories outside `exclude_tier` (`user_id`, `live`); an owner with none has no row."""
    return _PG_COUNT_LIVE, (owners, now, str(exclude_tier), len(owners))


def create_statement(
    creations: Sequence[tuple[NewMemory, str]], *, now: datetime, channel: str
) -> tuple[str, tuple[Any, ...]]:
    """Insert each new memory (with the payload of its NOTIFY on `channel`) whose key is still free
    (`created_at = updated_at = now`), with its audit entry, in one statement, which returns the created rows."""
    rows = [
        {
            "memory_id": new.entry.memory_id,
            "user_id": new.entry.user_id,
            "memory_type": new.entry.memory_type.value,
            "key": new.entry.key,
            "value": json.dumps(new.entry.value),
            "importance_score": new.entry.importance_score,
            "expires_at": new.entry.expires_at,
            "search_text": new.search_text,
            "notification": notification,
        }
        | new.audit.batch_input()
        for new, notification in creations
    ]
    return _PG_CREATE, (*_CREATE_INPUT.arrays(rows), now, channel)
