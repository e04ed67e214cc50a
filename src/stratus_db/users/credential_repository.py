"""All SQL on user_credentials, and the copy of their codes kept in users.licenses. A credential's number, issue
date and restrictions are encrypted under the holder's data key on the way in and decrypted on the way out
(security/personal.py)."""

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
from stratus_db.security.crypto import DataKey
from stratus_db.security.personal import PersonalData
from stratus_db.users.credentials import credential_kind
from stratus_db.users.schemas import CredentialRead

TABLE = "user_credentials"
_credentials = table_of(CredentialRow)
_users = table_of(UserRow)
_WITH_KEY = select(_credentials, _users.c.data_key).join_from(
    _credentials, _users, _users.c.user_id == _credentials.c.user_id
)
"""Credentials with their holder's wrapped data key, which decrypts them."""


class CredentialRepository:
    def __init__(self, conn: AsyncConnection, personal: PersonalData) -> None:
        self.conn = conn
        self.personal = personal

    def _read(self, row: Any) -> CredentialRead:
        values = dict(row)
        return self._open(values, self.personal.unwrap(values["user_id"], values.pop("data_key")))

    def _open(self, values: dict[str, Any], data_key: DataKey) -> CredentialRead:
        return CredentialRead.model_validate(
            self.personal.open_row(TABLE, values, values["credential_id"], data_key)
        )

    async def _read_all(self, statement: Select[Any]) -> list[CredentialRead]:
        return [self._read(row) for row in (await self.conn.execute(statement)).mappings()]

    async def _key(self, user_id: uuid.UUID) -> DataKey:
        return await self.personal.key_for_writing(self.conn, user_id)

    async def of_user(self, user_id: uuid.UUID) -> list[CredentialRead]:
        """The user's credentials in the order they were added (keys are UUIDv7)."""
        return await self._read_all(
            _WITH_KEY.where(CredentialRow.user_id == user_id).order_by(CredentialRow.credential_id)
        )

    async def get(self, user_id: uuid.UUID, credential_id: uuid.UUID) -> CredentialRead | None:
        found = await self._read_all(
            _WITH_KEY.where(CredentialRow.user_id == user_id, CredentialRow.credential_id == credential_id)
        )
        return found[0] if found else None

    async def insert(self, user_id: uuid.UUID, code: str, now: datetime, **details: Any) -> CredentialRead:
        """Add credential `code` (canonical) with `details` (number, issued_at, expires_at, restrictions)."""
        credential_id = new_id()
        values = {
            "credential_id": credential_id,
            "user_id": user_id,
            "code": code,
            "kind": credential_kind(code),
            "created_at": now,
            "updated_at": now,
            **details,
        }
        sealed = self.personal.seal_row(TABLE, values, credential_id, await self._key(user_id))
        statement = insert(_credentials).values(sealed)
        try:
            await self.conn.execute(statement)
        except IntegrityError as exc:
            failure = failure_of(exc)
            if failure.violation is Violation.unique:
                raise ConflictError(
                    f"the user already holds credential {code}: change it with update_credential",
                    violation=Violation.unique,
                    constraint=failure.constraint,
                ) from exc
            raise
        return CredentialRead.model_validate({name: values.get(name) for name in CredentialRead.model_fields})

    async def update(
        self, user_id: uuid.UUID, credential_id: uuid.UUID, changes: dict[str, Any], now: datetime
    ) -> CredentialRead:
        data_key = await self._key(user_id)
        statement = (
            update(_credentials)
            .where(CredentialRow.user_id == user_id, CredentialRow.credential_id == credential_id)
            .values(**self.personal.seal_row(TABLE, changes, credential_id, data_key), updated_at=now)
            .returning(_credentials)
        )
        return self._open(dict((await self.conn.execute(statement)).mappings().one()), data_key)

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
        # Many users' credentials: their keys in one statement (those not cached), not joined into the range scan.
        rows = [
            dict(row)
            for row in (await self.conn.execute(expiring_statement(first, last, after, limit))).mappings()
        ]
        keys = await self.personal.keys_of(self.conn, {row["user_id"] for row in rows})
        return [self._open(row, keys[row["user_id"]]) for row in rows]


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
