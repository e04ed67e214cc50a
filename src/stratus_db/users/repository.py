"""All SQL on users."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import ConflictError, Violation
from stratus_db.kit.failures import failure_of
from stratus_db.kit.models import table_of
from stratus_db.models import UserRole, UserRow
from stratus_db.users.schemas import UserRead, UserUpdate

_users = table_of(UserRow)
_RETURNED = [column for column in _users.c if column.name in UserRead.model_fields]
"""The columns a UserRead is made of: every statement returning users returns these."""


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
        return select(*_RETURNED).where(UserRow.user_id == user_id)

    async def _one_or_none(self, statement: Select[Any]) -> UserRead | None:
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else UserRead.model_validate(row)

    async def insert(self, user: UserRead) -> UserRead:
        """Insert `user`; the stored row comes back (a JSON value as the database keeps it)."""
        statement = insert(_users).values(**user.model_dump()).returning(*_RETURNED)
        try:
            row = (await self.conn.execute(statement)).mappings().one()
        except IntegrityError as exc:
            _raise_if_email_taken(exc, user.email)
            raise
        return UserRead.model_validate(row)

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> UserRead | None:
        statement = self.by_id(user_id)
        return await self._one_or_none(statement.with_for_update() if for_update else statement)

    async def get_by_email(self, email: str) -> UserRead | None:
        return await self._one_or_none(select(*_RETURNED).where(UserRow.email == email))

    async def update(self, user_id: uuid.UUID, changes: UserUpdate, now: datetime) -> UserRead:
        """Write the fields `changes` sets (those left out keep their values); the user was active at `now`."""
        statement = (
            update(_users)
            .where(UserRow.user_id == user_id)
            .values(**changes.model_dump(exclude_unset=True), updated_at=now, last_active=now)
            .returning(*_RETURNED)
        )
        try:
            row = (await self.conn.execute(statement)).mappings().one()
        except IntegrityError as exc:
            _raise_if_email_taken(exc, changes.email)
            raise
        return UserRead.model_validate(row)

    async def page(
        self,
        *,
        role: UserRole | None = None,
        experience_level: str | None = None,
        active_since: datetime | None = None,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[UserRead]:
        # Keys are UUIDv7, so key order is creation order. The filters on experience_level and last_active have no
        # index of their own yet (no migration in that change): docs/users.md says which a later migration adds.
        statement = select(*_RETURNED).order_by(UserRow.user_id).limit(limit)
        if role is not None:
            statement = statement.where(UserRow.role == role)
        if experience_level is not None:
            statement = statement.where(UserRow.experience_level == experience_level)
        if active_since is not None:
            statement = statement.where(UserRow.last_active >= active_since)
        if after is not None:
            statement = statement.where(UserRow.user_id > after)
        return [UserRead.model_validate(row) for row in (await self.conn.execute(statement)).mappings()]
