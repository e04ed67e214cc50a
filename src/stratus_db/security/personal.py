"""Personal data on its way to and from the database: which fields are encrypted, each user's data key, and the
sealing of values in rows and in the audit trail. One per database handle (`PersonalData.of(db)`), built on first
use from the handle's settings (security/keystore.py load_encryption). docs/security.md tells the whole design.

Every personal value is encrypted under its owner's data key (a random AES-256 key per user, stored wrapped by the
keyring in `users.data_key`): the users row, their credentials, their sensitive memories, and the personal values
that the audit trail keeps about them. Deleting the user's row destroys that key, and with it every value the audit
trail still holds in their name (crypto-shredding); rotating the keyring only rewraps the data keys.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Final

from pydantic import JsonValue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.errors import DecryptionError, NotFoundError
from stratus_db.kit.models import table_of
from stratus_db.models import UserRow
from stratus_db.security.crypto import BlindIndex, Cell, DataKey, FieldCipher, is_token
from stratus_db.security.keystore import Encryption, load_encryption

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

ENCRYPTED_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "users": ("name", "email", "birth_date", "canac"),
    "user_credentials": ("number", "issued_at", "restrictions"),
}
"""The columns held encrypted under the owner's data key, by table; a sensitive memory's `value` too (its row's
`sensitive` flag says so). The audit trail's old and new values of these fields are encrypted the same way."""
SENSITIVE_MEMORY_FIELDS: Final = ("value",)
"""A sensitive memory's fields encrypted in its row and in its audit rows."""
AUDIT_TABLE: Final = "audit_log"
MEMORY_TABLE: Final = "memory_entries"
SHREDDED: Final = "[shredded]"
"""What an audit value reads as once its owner's data key is destroyed (the user erased)."""
_CACHED_KEYS: Final = 10_000
"""Unwrapped data keys kept per handle (least recently used dropped first): about 1 MB, and one unwrap saved on
every read of a recent user's data."""
_users = table_of(UserRow)


class PersonalData:
    """Encrypts and decrypts the personal fields of one database handle."""

    def __init__(self, encryption: Encryption) -> None:
        self.cipher: FieldCipher = encryption.fields
        self.blind_index: BlindIndex = encryption.blind_index
        self._keys: OrderedDict[uuid.UUID, tuple[str, DataKey]] = OrderedDict()

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> PersonalData:
        """The handle's one instance; its keys are read (or, on the embedded file, generated) on first use.

        Raises:
            ConfigurationError: the keys are missing or malformed (security/keystore.py load_encryption).
        """
        return db.extension("security.personal_data", lambda: cls(load_encryption(db.settings)))

    # data keys

    def new_key(self, user_id: uuid.UUID) -> tuple[DataKey, str]:
        """A new data key for a new user, and its wrapped form for `users.data_key`."""
        data_key, wrapped = self.cipher.new_data_key(user_id)
        self._remember(user_id, wrapped, data_key)
        return data_key, wrapped

    def unwrap(self, user_id: uuid.UUID, wrapped: str) -> DataKey:
        """The data key `wrapped` (a `users.data_key`) holds, unwrapped once per handle while it is used.

        Raises:
            DecryptionError: it does not unwrap (altered, another user's, or under a key the keyring lacks).
        """
        cached = self._keys.get(user_id)
        if cached is not None and cached[0] == wrapped:
            self._keys.move_to_end(user_id)
            return cached[1]
        data_key = self.cipher.unwrap_data_key(wrapped, user_id)
        self._remember(user_id, wrapped, data_key)
        return data_key

    def cached_key(self, user_id: uuid.UUID) -> DataKey | None:
        """The user's data key if this handle holds it unwrapped already (no database read), else None."""
        cached = self._keys.get(user_id)
        if cached is None:
            return None
        self._keys.move_to_end(user_id)
        return cached[1]

    async def key_of(self, conn: AsyncConnection, user_id: uuid.UUID) -> DataKey | None:
        """The user's data key, or None when it no longer exists (the user erased) or never did."""
        cached = self.cached_key(user_id)
        if cached is not None:
            return cached
        wrapped = await conn.scalar(select(_users.c.data_key).where(_users.c.user_id == user_id))
        return None if wrapped is None else self.unwrap(user_id, wrapped)

    async def keys_of(self, conn: AsyncConnection, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, DataKey]:
        """The data keys of users known to exist, those not cached read in one statement.

        Raises:
            NotFoundError: one of them has no data key (erased meanwhile).
        """
        keys = {user_id: cached[1] for user_id in user_ids if (cached := self._keys.get(user_id)) is not None}
        missing = user_ids - keys.keys()
        if missing:
            rows = await conn.execute(
                select(_users.c.user_id, _users.c.data_key).where(_users.c.user_id.in_(missing))
            )
            for user_id, wrapped in rows:
                if wrapped is not None:
                    keys[user_id] = self.unwrap(user_id, wrapped)
        if len(keys) < len(user_ids):
            raise NotFoundError(f"user {next(iter(user_ids - keys.keys()))} has no data key: erased")
        return keys

    async def key_for_writing(self, conn: AsyncConnection, user_id: uuid.UUID) -> DataKey:
        """The data key of a user whose data is about to be written: a user without one is erased (gone, or a
        tombstone kept for a legal hold), whose data no longer changes.

        Raises:
            NotFoundError: the user has no data key.
        """
        data_key = await self.key_of(conn, user_id)
        if data_key is None:
            raise NotFoundError(
                f"user {user_id} does not exist (or was erased: their data no longer changes)"
            )
        return data_key

    def forget(self, user_id: uuid.UUID) -> None:
        """Drop the user's unwrapped key from this handle: their key was destroyed."""
        self._keys.pop(user_id, None)

    def _remember(self, user_id: uuid.UUID, wrapped: str, data_key: DataKey) -> None:
        self._keys[user_id] = (wrapped, data_key)
        self._keys.move_to_end(user_id)
        if len(self._keys) > _CACHED_KEYS:
            self._keys.popitem(last=False)

    # values in rows

    def seal(self, value: Any, table: str, column: str, row_id: uuid.UUID, data_key: DataKey) -> str | None:
        """`value` encrypted for its cell under the owner's data key; None stays None. Text, dates and JSON
        values keep their type (FieldCipher.decrypt_value reads it back)."""
        if value is None:
            return None
        cell = Cell(table, column, row_id)
        if isinstance(value, str):
            return self.cipher.encrypt(value, cell, data_key=data_key)
        if isinstance(value, date) and not isinstance(value, datetime):
            return self.cipher.encrypt_date(value, cell, data_key=data_key)
        return self.cipher.encrypt_json(value, cell, data_key=data_key)

    def open(self, token: str | None, table: str, column: str, row_id: uuid.UUID, data_key: DataKey) -> Any:
        """The value `seal` encrypted; None stays None.

        Raises:
            DecryptionError: altered, moved from another cell, or under another key.
        """
        if token is None:
            return None
        return self.cipher.decrypt_value(token, Cell(table, column, row_id), data_key=data_key)

    def seal_row(
        self, table: str, values: Mapping[str, Any], row_id: uuid.UUID, data_key: DataKey
    ) -> dict[str, Any]:
        """`values` with the table's encrypted columns (ENCRYPTED_COLUMNS) sealed, the others as they are."""
        encrypted = ENCRYPTED_COLUMNS[table]
        return {
            name: self.seal(value, table, name, row_id, data_key) if name in encrypted else value
            for name, value in values.items()
        }

    def open_row(
        self, table: str, row: Mapping[str, Any], row_id: uuid.UUID, data_key: DataKey
    ) -> dict[str, Any]:
        """A row read from `table` with its encrypted columns decrypted."""
        encrypted = ENCRYPTED_COLUMNS[table]
        return {
            name: self.open(value, table, name, row_id, data_key) if name in encrypted else value
            for name, value in row.items()
        }

    def _audited_value(
        self,
        value: str,
        side: str,
        name: str,
        audit_id: uuid.UUID,
        data_key: DataKey,
        table: str | None,
        record_id: uuid.UUID | None,
    ) -> JsonValue:
        """A sealed field of an audit row: bound to the audit row when the library wrote it; a row's own token when
        the database's trigger recorded a write made outside the library (migration 0011)."""
        try:
            return self.cipher.decrypt_json(
                value, Cell(AUDIT_TABLE, f"{side}.{name}", audit_id), data_key=data_key
            )
        except DecryptionError:
            if table is None or record_id is None:
                raise
            opened = self.cipher.decrypt_value(value, Cell(table, name, record_id), data_key=data_key)
            return opened.isoformat() if isinstance(opened, date) else opened

    def _memory_value_in_audit(
        self, value: str, values: dict[str, Any], record_id: uuid.UUID | None, data_key: DataKey | None
    ) -> JsonValue:
        """A memory's value in its audit row: a sensitive one's token is its row's, bound to the memory it belonged
        to (the row's `memory_id` when the values name it: an expired memory replaced has its own); an ordinary
        value that only looks like a token stays as it is."""
        if data_key is None:
            return SHREDDED
        owner = values.get("memory_id", record_id)
        try:
            return self.open_memory_value(value, uuid.UUID(str(owner)), data_key)
        except (DecryptionError, ValueError):
            return value

    # sensitive memories

    def seal_memory_value(self, value: Any, memory_id: uuid.UUID, *, data_key: DataKey) -> str:
        """A sensitive memory's value as its row holds it: a token bound to the row (memory_entries.value)."""
        return self.cipher.encrypt_json(value, Cell(MEMORY_TABLE, "value", memory_id), data_key=data_key)

    def open_memory_value(self, token: str, memory_id: uuid.UUID, data_key: DataKey) -> JsonValue:
        """The value `seal_memory_value` encrypted for the row `memory_id`.

        Raises:
            DecryptionError: altered, moved from another row, or under another key.
        """
        return self.cipher.decrypt_json(token, Cell(MEMORY_TABLE, "value", memory_id), data_key=data_key)

    # values in the audit trail

    def seal_audit(
        self, fields: tuple[str, ...], side: str, values: Any, audit_id: uuid.UUID, data_key: DataKey
    ) -> Any:
        """An audit row's old or new values (`side`) with `fields` encrypted under the subject's data key, each
        bound to its place in this audit row (column `old_values.name`, say): a value moved to another audit row
        does not decrypt."""
        if not isinstance(values, dict) or not any(name in values for name in fields):
            return values
        return {
            name: (
                self.cipher.encrypt_json(
                    value, Cell(AUDIT_TABLE, f"{side}.{name}", audit_id), data_key=data_key
                )
                if name in fields and value is not None
                else value
            )
            for name, value in values.items()
        }

    def open_audit(
        self,
        side: str,
        values: Any,
        audit_id: uuid.UUID,
        data_key: DataKey | None,
        *,
        table: str | None = None,
        record_id: uuid.UUID | None = None,
        outside: bool = False,
    ) -> Any:
        """An audit row's old or new values as written: each sealed value decrypted with the subject's data key, or
        SHREDDED when that key is gone. A sensitive memory's `value` (on `table` memory_entries) is its row's own
        token, bound to the memory (`record_id`). `outside`: the database's trigger wrote the row, for a write made
        outside the library (revision 0011): its values are the row's own tokens, bound to the row they came from.

        Raises:
            DecryptionError: a value was altered or moved from another audit row.
        """
        if not isinstance(values, dict):
            return values
        opened: dict[str, JsonValue] = {}
        sealed = ENCRYPTED_COLUMNS.get(table or "", ())
        for name, value in values.items():
            if not is_token(value):
                opened[name] = value
            elif table == MEMORY_TABLE and name == "value":
                opened[name] = self._memory_value_in_audit(value, values, record_id, data_key)
            elif name not in sealed:
                opened[name] = value  # plaintext that happens to look like a token
            elif data_key is None:
                opened[name] = SHREDDED
            else:
                opened[name] = self._audited_value(
                    value, side, name, audit_id, data_key, table if outside else None, record_id
                )
        return opened
