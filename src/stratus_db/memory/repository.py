"""All SQL on memory_entries, scoped to one user: every statement carries the owner's filter."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import NotFoundError, TransientDatabaseError
from stratus_db.kit.integrity import Violation, violation_of
from stratus_db.kit.models import table_of
from stratus_db.models import MemoryEntry, MemoryType

_memories = table_of(MemoryEntry)


class MemoryRepository:
    def __init__(self, conn: AsyncConnection, user_id: uuid.UUID) -> None:
        self.conn = conn
        self.user_id = user_id
        self._owned: ColumnElement[bool] = MemoryEntry.user_id == user_id

    def _live(self, now: datetime) -> ColumnElement[bool]:
        return or_(MemoryEntry.expires_at.is_(None), MemoryEntry.expires_at > now)

    async def get_for_update(self, key: str) -> dict[str, Any] | None:
        statement = select(_memories).where(self._owned, MemoryEntry.key == key).with_for_update()
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else dict(row)

    async def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        statement = insert(_memories).values(user_id=self.user_id, **values).returning(_memories)
        try:
            return dict((await self.conn.execute(statement)).mappings().one())
        except IntegrityError as exc:
            violation = violation_of(exc)
            if violation is Violation.foreign_key:
                raise NotFoundError(f"user {self.user_id} does not exist") from exc
            if violation is Violation.unique:
                # Another transaction created the same key since we looked: the retry will update it instead.
                raise TransientDatabaseError(f"memory {values['key']!r} was created concurrently") from exc
            raise

    async def update(self, key: str, values: dict[str, Any]) -> dict[str, Any]:
        statement = (
            update(_memories).where(self._owned, MemoryEntry.key == key).values(**values).returning(_memories)
        )
        return dict((await self.conn.execute(statement)).mappings().one())

    async def read_and_count(self, key: str, now: datetime) -> dict[str, Any] | None:
        """The live memory, with its access counted, in one statement (the increment is atomic in SQL)."""
        statement = (
            update(_memories)
            .where(self._owned, MemoryEntry.key == key, self._live(now))
            .values(access_count=MemoryEntry.access_count + 1, last_accessed_at=now)
            .returning(_memories)
        )
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else dict(row)

    async def page(
        self, *, memory_type: MemoryType | None, after_key: str | None, limit: int, now: datetime
    ) -> list[dict[str, Any]]:
        statement = (
            select(_memories).where(self._owned, self._live(now)).order_by(MemoryEntry.key).limit(limit)
        )
        if memory_type is not None:
            statement = statement.where(MemoryEntry.memory_type == memory_type)
        if after_key is not None:
            statement = statement.where(MemoryEntry.key > after_key)
        return [dict(row) for row in (await self.conn.execute(statement)).mappings()]

    async def delete(self, key: str) -> dict[str, Any] | None:
        statement = delete(_memories).where(self._owned, MemoryEntry.key == key).returning(_memories)
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else dict(row)
