"""MemoryManager: what the agents remember about each user, one value per key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager, changed_fields
from stratus_db.audit.schemas import AuditAction
from stratus_db.kit.ids import new_id
from stratus_db.kit.schemas import Page, check_limit, decode_cursor, encode_cursor, make_page
from stratus_db.kit.validation import parse_enum, parse_uuid, validate_input
from stratus_db.memory.repository import MemoryRepository
from stratus_db.memory.schemas import MemoryEntry, MemoryLookup, MemoryStore
from stratus_db.models import MemoryType

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

TABLE = "memory_entries"


class MemoryManager:
    """Store, read, list and delete memories. Writes are audited; an expired memory is never returned."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)

    async def store_memory(
        self,
        user_id: uuid.UUID | str,
        key: str,
        value: Any,
        memory_type: MemoryType | str = MemoryType.short_term,
        importance_score: float = 0.5,
        *,
        expires_at: datetime | None = None,
        tx: AsyncConnection | None = None,
    ) -> MemoryEntry:
        """Store `value` under `key` for the user; an existing key is updated in place.

        On update, `value`, `memory_type`, `importance_score` and `expires_at` take the new values; `access_count`,
        `created_at` and `last_accessed_at` are kept. The audit row keeps the previous values.

        Args:
            user_id: the owner.
            key: 1–200 characters, compared exactly.
            value: any JSON value (no NaN, no NUL characters).
            memory_type: short_term, medium_term, long_term or critical.
            importance_score: from 0 to 1.
            expires_at: when the memory stops being returned (time-zone aware); None keeps it.
            tx: a transaction from `db.transaction()` to join.

        Raises:
            ValidationError: a malformed argument; nothing is written.
            NotFoundError: the user does not exist.
        """
        async with self._db.operation("memory.store") as op:
            data = validate_input(
                MemoryStore,
                {
                    "user_id": user_id,
                    "key": key,
                    "value": value,
                    "memory_type": memory_type,
                    "importance_score": importance_score,
                    "expires_at": expires_at,
                },
            )
            fields = data.model_dump(include={"value", "memory_type", "importance_score", "expires_at"})
            memory_id = new_id()

            async def work(conn: AsyncConnection) -> MemoryEntry:
                repository = MemoryRepository(conn, data.user_id)
                now = self._db.clock()
                before = await repository.get_for_update(data.key)
                if before is None:
                    row = await repository.insert(
                        fields
                        | {
                            "memory_id": memory_id,
                            "key": data.key,
                            "access_count": 0,
                            "created_at": now,
                            "updated_at": now,
                            "last_accessed_at": None,
                        }
                    )
                    entry = MemoryEntry.model_validate(row)
                    old_values, new_values = None, entry.model_dump(mode="json")
                    action = AuditAction.create
                else:
                    previous = MemoryEntry.model_validate(before)
                    old_values, new_values = changed_fields(
                        previous.model_dump(mode="json", include=set(fields)),
                        data.model_dump(mode="json", include=set(fields)),
                    )
                    if not new_values:
                        return previous  # storing what is already stored changes nothing, so there is nothing to audit
                    entry = MemoryEntry.model_validate(
                        await repository.update(data.key, fields | {"updated_at": now})
                    )
                    action = AuditAction.update
                await self._audit.record(
                    conn,
                    action=action,
                    table_name=TABLE,
                    record_id=entry.memory_id,
                    user_id=entry.user_id,
                    old_values=old_values,
                    new_values=new_values,
                )
                return entry

            return await op.run(work, tx=tx)

    async def get_memory(
        self, user_id: uuid.UUID | str, key: str, *, tx: AsyncConnection | None = None
    ) -> MemoryEntry | None:
        """The user's live memory under `key`, or None if missing or expired. Counts the access.

        Raises:
            ValidationError: `user_id` is not a UUID or `key` is malformed.
        """
        async with self._db.operation("memory.get") as op:
            lookup = validate_input(MemoryLookup, {"user_id": user_id, "key": key})

            async def work(conn: AsyncConnection) -> MemoryEntry | None:
                row = await MemoryRepository(conn, lookup.user_id).read_and_count(lookup.key, self._db.clock())
                return None if row is None else MemoryEntry.model_validate(row)

            return await op.run(work, tx=tx)

    async def list_memories(
        self,
        user_id: uuid.UUID | str,
        memory_type: MemoryType | str | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
        tx: AsyncConnection | None = None,
    ) -> Page[MemoryEntry]:
        """The user's live memories in key order, optionally of one type. Does not count accesses.

        Raises:
            ValidationError: a malformed user id, type, limit or cursor.
        """
        async with self._db.operation("memory.list", read_only=True) as op:
            owner = parse_uuid(user_id, "user_id")
            type_filter = None if memory_type is None else parse_enum(MemoryType, memory_type, "memory_type")
            limit = check_limit(limit)
            after_key = None if cursor is None else decode_cursor(cursor, (str,))[0]

            async def work(conn: AsyncConnection) -> Page[MemoryEntry]:
                rows = await MemoryRepository(conn, owner).page(
                    memory_type=type_filter, after_key=after_key, limit=limit + 1, now=self._db.clock()
                )
                entries = [MemoryEntry.model_validate(row) for row in rows]
                return make_page(entries, limit, lambda entry: encode_cursor(entry.key))

            return await op.run(work, tx=tx)

    async def delete_memory(
        self, user_id: uuid.UUID | str, key: str, *, tx: AsyncConnection | None = None
    ) -> bool:
        """Delete the user's memory under `key`; True if there was one. The audit row keeps what was deleted.

        Raises:
            ValidationError: `user_id` is not a UUID or `key` is malformed.
        """
        async with self._db.operation("memory.delete") as op:
            lookup = validate_input(MemoryLookup, {"user_id": user_id, "key": key})

            async def work(conn: AsyncConnection) -> bool:
                row = await MemoryRepository(conn, lookup.user_id).delete(lookup.key)
                if row is None:
                    return False
                entry = MemoryEntry.model_validate(row)
                await self._audit.record(
                    conn,
                    action=AuditAction.delete,
                    table_name=TABLE,
                    record_id=entry.memory_id,
                    user_id=entry.user_id,
                    old_values=entry.model_dump(mode="json"),
                )
                return True

            return await op.run(work, tx=tx)
