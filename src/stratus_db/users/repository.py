"""All SQL on users. The personal fields are encrypted on the way in and decrypted on the way out
(security/personal.py): nothing above this module sees a token."""

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
from stratus_db.models import CredentialRow, UserRole, UserRow
from stratus_db.security.crypto import DataKey
from stratus_db.security.personal import ENCRYPTED_COLUMNS, PersonalData
from stratus_db.users.schemas import UserRead, UserUpdate

TABLE = "users"
TOMBSTONE_INDEX_PREFIX = "erased:"
"""The start of a tombstone's `email_index` (privacy/erasure.py): its fields are placeholders, not tokens."""
_users = table_of(UserRow)
_ENCRYPTED = ENCRYPTED_COLUMNS[TABLE]
_RETURNED = [
    column
    for column in _users.c
    if column.name in UserRead.model_fields or column.name in ("data_key", "email_index")
]
"""The columns a UserRead is made of, and what decrypting it takes: every statement returning users returns these."""


def _raise_if_taken(exc: IntegrityError, email: object, canac: object) -> None:
    """A taken e-mail or CANAC raised as the ConflictError it is, with the rule and the constraint it broke."""
    failure = failure_of(exc)
    if failure.violation is Violation.unique:
        # PostgreSQL names the index (ix_users_canac_index), SQLite the column (users.canac_index).
        if "canac" in (failure.constraint or ""):
            message = f"canac {canac!r} already belongs to another user"
        else:
            message = f"a user with e-mail {email!r} already exists"
        raise ConflictError(message, violation=Violation.unique, constraint=failure.constraint) from exc


class UserRepository:
    def __init__(self, conn: AsyncConnection, personal: PersonalData) -> None:
        self.conn = conn
        self.personal = personal

    def by_id(self, user_id: uuid.UUID) -> Select[Any]:
        return select(*_RETURNED).where(UserRow.user_id == user_id)

    def read(self, row: Any) -> UserRead:
        """A UserRead from a row of _RETURNED: its personal fields decrypted with the user's data key.

        Raises:
            DecryptionError: a field was altered or moved from another row, or the key cannot be unwrapped.
        """
        values = dict(row)
        wrapped, email_index = values.pop("data_key"), values.pop("email_index")
        user_id = values["user_id"]
        if email_index.startswith(TOMBSTONE_INDEX_PREFIX):
            # An erased user kept for a legal hold: placeholders in clear, nothing personal left to decrypt.
            return UserRead.model_validate(values)
        data_key = self.personal.unwrap(user_id, wrapped)
        return UserRead.model_validate(self.personal.open_row(TABLE, values, user_id, data_key))

    async def _one_or_none(self, statement: Select[Any]) -> UserRead | None:
        row = (await self.conn.execute(statement)).mappings().one_or_none()
        return None if row is None else self.read(row)

    def _sealed(self, values: dict[str, Any], user_id: uuid.UUID, data_key: DataKey) -> dict[str, Any]:
        """`values` to write: the personal fields encrypted, the blind indexes of a new e-mail or CANAC beside."""
        sealed = self.personal.seal_row(TABLE, values, user_id, data_key)
        if "email" in values:
            sealed["email_index"] = self.personal.blind_index.email(values["email"])
        if "canac" in values:
            canac = values["canac"]
            sealed["canac_index"] = None if canac is None else self.personal.blind_index.canac(canac)
        return sealed

    async def insert(self, user: UserRead) -> UserRead:
        """Insert `user` with a new data key; the stored row comes back (a JSON value as the database keeps it)."""
        data_key, wrapped = self.personal.new_key(user.user_id)
        values = self._sealed(user.model_dump(), user.user_id, data_key) | {"data_key": wrapped}
        statement = insert(_users).values(**values).returning(*_RETURNED)
        try:
            row = (await self.conn.execute(statement)).mappings().one()
        except IntegrityError as exc:
            _raise_if_taken(exc, user.email, user.canac)
            raise
        return self.read(row)

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> UserRead | None:
        statement = self.by_id(user_id)
        return await self._one_or_none(statement.with_for_update() if for_update else statement)

    async def get_by_email(self, email: str) -> UserRead | None:
        index = self.personal.blind_index.email(email)
        return await self._one_or_none(select(*_RETURNED).where(UserRow.email_index == index))

    async def data_key(self, user_id: uuid.UUID) -> DataKey:
        """The user's data key, to write their data (PersonalData.key_for_writing: NotFoundError once erased)."""
        return await self.personal.key_for_writing(self.conn, user_id)

    async def update(self, user_id: uuid.UUID, changes: UserUpdate, now: datetime) -> UserRead:
        """Write the fields `changes` sets (those left out keep their values); the user was active at `now`."""
        values = changes.model_dump(exclude_unset=True)
        if any(name in values for name in _ENCRYPTED):
            values = self._sealed(values, user_id, await self.data_key(user_id))
        statement = (
            update(_users)
            .where(UserRow.user_id == user_id)
            .values(**values, updated_at=now, last_active=now)
            .returning(*_RETURNED)
        )
        try:
            row = (await self.conn.execute(statement)).mappings().one()
        except IntegrityError as exc:
            _raise_if_taken(exc, changes.email, changes.canac)
            raise
        return self.read(row)

    async def set_deactivated(
        self, user_id: uuid.UUID, deactivated_at: datetime | None, now: datetime
    ) -> UserRead:
        """Set (or clear, with None) `deactivated_at`. Not activity of the user's: `last_active` stays."""
        statement = (
            update(_users)
            .where(UserRow.user_id == user_id)
            .values(deactivated_at=deactivated_at, updated_at=now)
            .returning(*_RETURNED)
        )
        return self.read((await self.conn.execute(statement)).mappings().one())

    async def page(
        self,
        *,
        role: UserRole | None = None,
        experience_level: str | None = None,
        active_since: datetime | None = None,
        credential_code: str | None = None,
        include_deactivated: bool = False,
        after: uuid.UUID | None,
        limit: int,
    ) -> list[UserRead]:
        statement = page_statement(
            role=role,
            experience_level=experience_level,
            active_since=active_since,
            credential_code=credential_code,
            include_deactivated=include_deactivated,
            after=after,
            limit=limit,
        )
        return [self.read(row) for row in (await self.conn.execute(statement)).mappings()]


def page_statement(
    *,
    role: UserRole | None = None,
    experience_level: str | None = None,
    active_since: datetime | None = None,
    credential_code: str | None = None,
    include_deactivated: bool = False,
    after: uuid.UUID | None,
    limit: int,
) -> Select[Any]:
    """Users in key order (keys are UUIDv7: creation order) after `after`, with the filters given. Each filter has
    its index: (role, user_id), (experience_level, user_id), (last_active), and for a credential code
    user_credentials (code, user_id), whose range is read in user order and joined to users by key."""
    statement = select(*_RETURNED).order_by(UserRow.user_id).limit(limit)
    if credential_code is not None:
        # A user holds a code once (UNIQUE (user_id, code)), so the join gives each holder one row.
        statement = statement.join(CredentialRow, CredentialRow.user_id == UserRow.user_id).where(
            CredentialRow.code == credential_code
        )
    if not include_deactivated:
        statement = statement.where(UserRow.deactivated_at.is_(None))
    if role is not None:
        statement = statement.where(UserRow.role == role)
    if experience_level is not None:
        statement = statement.where(UserRow.experience_level == experience_level)
    if active_since is not None:
        statement = statement.where(UserRow.last_active >= active_since)
    if after is not None:
        statement = statement.where(UserRow.user_id > after)
        if credential_code is not None:
            # The planner carries equalities across a join, not ranges: said on both sides, the page starts inside
            # the code's range of the index instead of at its beginning.
            statement = statement.where(CredentialRow.user_id > after)
    return statement
