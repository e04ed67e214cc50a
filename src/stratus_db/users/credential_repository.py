"""All SQL on user_credentials, and the copy of their codes kept in users.licenses."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, delete, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import ConflictError, Violation
from stratus_db.kit.failures import failure_of
from stratus_db.kit.ids import new_id
from stratus_db.kit.models import table_of
from stratus_db.models import CredentialRow, UserRow
from stratus_db.users.credentials import credential_kind
from stratus_db.users.schemas import CredentialRead

_credentials = table_of(CredentialRow)
_users = table_of(UserRow)


class CredentialRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def of_user(self, user_id: uuid.UUID) -> list[CredentialRead]:
        """The user's credentials in the order they were added (keys are UUIDv7)."""
        statement = (
            select(_credentials).where(CredentialRow.user_id == user_id).order_by(CredentialRow.credential_id)
        )
        return [CredentialRead.model_validate(row) for row in (await self.conn.execute(statement)).mappings()]

    async def get(self, user_id: uuid.UUID, credential_id: uuid.UUID) -> CredentialRead | None:
        statement = select(_credentials).where(
            CredentialRow.user_id == user_id, CredentialRow.credential_id == credential_id
        )
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else CredentialRead.model_validate(row)

    async def insert(self, user_id: uuid.UUID, code: str, now: datetime, **details: Any) -> CredentialRead:
        """Add credential `code` (canonical) with `details` (number, issued_at, expires_at, restrictions)."""
        statement = (
            insert(_credentials)
            .values(
                credential_id=new_id(),
                user_id=user_id,
                code=code,
                kind=credential_kind(code),
                created_at=now,
                updated_at=now,
                **details,
            )
            .returning(_credentials)
        )
        try:
            row = (await self.conn.execute(statement)).mappings().one()
        except IntegrityError as exc:
            failure = failure_of(exc)
            if failure.violation is Violation.unique:
                raise ConflictError(
                    f"the user already holds credential {code}: change it with update_credential",
                    violation=Violation.unique,
                    constraint=failure.constraint,
                ) from exc
            raise
        return CredentialRead.model_validate(row)

    async def update(
        self, user_id: uuid.UUID, credential_id: uuid.UUID, changes: dict[str, Any], now: datetime
    ) -> CredentialRead:
        statement = (
            update(_credentials)
            .where(CredentialRow.user_id == user_id, CredentialRow.credential_id == credential_id)
            .values(**changes, updated_at=now)
            .returning(_credentials)
        )
        return CredentialRead.model_validate((await self.conn.execute(statement)).mappings().one())

    async def delete(self, user_id: uuid.UUID, credential_ids: list[uuid.UUID]) -> None:
        if credential_ids:
            await self.conn.execute(
                delete(_credentials).where(
                    CredentialRow.user_id == user_id, CredentialRow.credential_id.in_(credential_ids)
                )
            )

    async def set_licenses(self, user_id: uuid.UUID, previous: list[str]) -> list[str]:
        """Write users.licenses from the user's credentials: the codes `previous` listed that remain, in its order,
        then the others in the order they were added. Returns the list written."""
        codes = [credential.code for credential in await self.of_user(user_id)]
        kept = [code for code in previous if code in codes]
        licenses = kept + [code for code in codes if code not in kept]
        if licenses != previous:
            await self.conn.execute(
                update(_users).where(UserRow.user_id == user_id).values(licenses=licenses)
            )
        return licenses

    async def expiring(
        self, first: date, last: date, after: tuple[date, uuid.UUID] | None, limit: int
    ) -> list[CredentialRead]:
        statement = expiring_statement(first, last, after, limit)
        return [CredentialRead.model_validate(row) for row in (await self.conn.execute(statement)).mappings()]


def expiring_statement(
    first: date, last: date, after: tuple[date, uuid.UUID] | None, limit: int
) -> Select[Any]:
    """Every user's credentials expiring from `first` to `last` (both included), by (expires_at, credential_id),
    after the key `after`: one range of ix_user_credentials_expires_at_credential_id."""
    statement = (
        select(_credentials)
        .where(CredentialRow.expires_at >= first, CredentialRow.expires_at <= last)
        .order_by(CredentialRow.expires_at, CredentialRow.credential_id)
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(
            tuple_(CredentialRow.expires_at, CredentialRow.credential_id) > tuple_(*after)
        )
    return statement
