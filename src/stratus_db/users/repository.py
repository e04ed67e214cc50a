"""All SQL on users."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import ConflictError, Violation
from stratus_db.kit.failures import failure_of
from stratus_db.kit.models import table_of
from stratus_db.models import UserRole, UserRow

_users = table_of(UserRow)


def _raise_if_email_taken(exc: IntegrityError, email: object) -> None:
    """A taken e-mail raised as the ConflictError it is, with the rule and the constraint it broke."""
    failure = failure_of(exc)
    if failure.violation is Violation.unique:
        raise ConflictError(
            f"a user with e-mail {email!r} already exists",
            violation=Violation.unique,
            constraint=failure.constraint,
        ) from exc


class UserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def by_id(self, user_id: uuid.UUID) -> Select[Any]:
        return select(_users).where(UserRow.user_id == user_id)

    async def _one_or_none(self, statement: Select[Any]) -> dict[str, Any] | None:
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else dict(row)

    async def insert(self, values: dict[str, Any]) -> dict[str, Any]:
        try:
            row = (
                (await self.conn.execute(insert(_users).values(**values).returning(_users))).mappings().one()
            )
        except IntegrityError as exc:
            _raise_if_email_taken(exc, values["email"])
            raise
        return dict(row)

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> dict[str, Any] | None:
        statement = self.by_id(user_id)
        return await self._one_or_none(statement.with_for_update() if for_update else statement)

    async def get_by_email(self, email: str) -> dict[str, Any] | None:
        return await self._one_or_none(select(_users).where(UserRow.email == email))

    async def update(self, user_id: uuid.UUID, values: dict[str, Any]) -> dict[str, Any]:
        statement = update(_users).where(UserRow.user_id == user_id).values(**values).returning(_users)
        try:
            row = (await self.conn.execute(statement)).mappings().one()
        except IntegrityError as exc:
            _raise_if_email_taken(exc, values.get("email"))
            raise
        return dict(row)

    async def page(
        self, *, role: UserRole | None, after: uuid.UUID | None, limit: int
    ) -> list[dict[str, Any]]:
        # Keys are UUIDv7, so key order is creation order.
        statement = select(_users).order_by(UserRow.user_id).limit(limit)
        if role is not None:
            statement = statement.where(UserRow.role == role)
        if after is not None:
            statement = statement.where(UserRow.user_id > after)
        return [dict(row) for row in (await self.conn.execute(statement)).mappings()]
