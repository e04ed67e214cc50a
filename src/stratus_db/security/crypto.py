"""Field encryption in the application: AES-256-GCM under a keyring, per-user data keys for crypto-shredding, and a
blind index for e-mail lookups. Pure code: no database and no settings (security/keystore.py turns settings into
these objects). The formats, what is bound as associated data, rotation and the threat model: docs/security.md.

A stored value is a text token, `v1:<kind>:<key id>:<payload>`:

- `v1` is the format: AES-256-GCM, a random 96-bit nonce, the associated data described below;
- `<kind>` says which key: `k`, a key of the keyring (the id is the keyring's); `u`, a user's data key (the id is
  the data key's own); `w`, a user's data key wrapped by a keyring key (the id is the keyring key's);
- `<payload>` is base64url without padding of nonce (12 bytes) || ciphertext || GCM tag (16 bytes).

Text rather than bytes because a token must sit in a `TEXT`/`VARCHAR` column and inside a JSON document (the audit
trail's before/after values, an export) alike, on PostgreSQL and SQLite, and pass through COPY, CSV and logs
unharmed; base64 costs a third more space than BYTEA/BLOB would.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import os
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from pydantic import JsonValue, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from stratus_db.errors import ConfigurationError, DecryptionError, ValidationError
from stratus_db.kit.validation import SafeJson, in_utc, parse_uuid, shown

FORMAT_VERSION: Final = "v1"
"""The token format this code writes (and the only one it reads)."""
KEYS_VARIABLE: Final = "STRATUS_ENCRYPTION_KEYS"
BLIND_INDEX_VARIABLE: Final = "STRATUS_BLIND_INDEX_KEY"
KEY_BYTES: Final = 32
"""AES-256: every keyring key, data key and blind-index secret is 32 random bytes."""
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MAX_PLAINTEXT_BYTES: Final = 64 * 1024 * 1024
"""Largest value encrypted in one token (UTF-8 bytes): its token, a third larger, stays far below PostgreSQL's 1 GB
per value, and far above any personal field."""
MAX_EMAIL_CHARS: Final = 320

_KEY_ID = re.compile(r"[a-z0-9-]{1,16}")
_TOKEN = re.compile(rf"{FORMAT_VERSION}:([kuw]):([a-z0-9-]{{1,16}}):([A-Za-z0-9_-]+)")
"""A whole token (FORMAT_VERSION, a KeyKind, a key id, base64url): one match reads it all."""
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_AD_DOMAIN = b"stratus_db\x00"
"""Prefix of every associated data: a token of this library authenticates for nothing else."""
_BLIND_INDEX_INFO = b"stratus_db blind index v1: "
"""HKDF info prefix of a blind-index purpose's key; the purpose follows (`email`)."""
_JSON = TypeAdapter(SafeJson)


class KeyKind(StrEnum):
    """What the key id of a token names."""

    keyring = "k"
    """A value encrypted under a key of the keyring (STRATUS_ENCRYPTION_KEYS)."""
    data = "u"
    """A value encrypted under a user's data key; the id is the data key's."""
    wrapped = "w"
    """A user's data key, wrapped (encrypted) by a key of the keyring."""


_KIND_OF = {member.value: member for member in KeyKind}

# The first byte of every plaintext says what the rest encodes (docs/security.md), so that each decrypt_* returns
# its own type or says which one to use.
_TEXT = b"s"  # UTF-8 text
_JSON_VALUE = b"j"  # compact JSON, UTF-8
_DATE = b"d"  # ISO 8601 date, YYYY-MM-DD
_DATETIME = b"t"  # ISO 8601 date and time in UTC, +00:00
_TYPE_NAMES = {_TEXT: "text", _JSON_VALUE: "a JSON value", _DATE: "a date", _DATETIME: "a datetime"}
_READER = {
    _TEXT: "decrypt",
    _JSON_VALUE: "decrypt_json",
    _DATE: "decrypt_date",
    _DATETIME: "decrypt_datetime",
}


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # The caller has matched the text against _TOKEN: urlsafe_b64decode would silently drop other characters.
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_material(text: str) -> bytes | None:
    """32 bytes from standard or URL-safe base64 (padding optional); None when it is not that."""
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        material = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return material if len(material) == KEY_BYTES else None


def _fields(*fields: bytes) -> bytes:
    # Length-prefixed: no two different lists of fields encode to the same bytes.
    return b"".join(len(field).to_bytes(2, "big") + field for field in fields)


@functools.lru_cache(maxsize=1024)
def _key_header(kind: KeyKind, key_id: str) -> bytes:
    """The first fields of a token's associated data: the format, the key kind and the key id."""
    return _AD_DOMAIN + _fields(
        FORMAT_VERSION.encode("ascii"), kind.value.encode("ascii"), key_id.encode("ascii")
    )


def _associated_data(kind: KeyKind, key_id: str, tail: bytes) -> bytes:
    """What a token authenticates besides its ciphertext: the key header, then where it belongs (`tail`, the
    encoded fields of a Cell or of a wrapped data key's owner)."""
    return _key_header(kind, key_id) + tail


def _check_key_id(key_id: object, name: str) -> str:
    if not isinstance(key_id, str) or _KEY_ID.fullmatch(key_id) is None:
        raise ValidationError(f"{name} must be 1 to 16 characters of a-z, 0-9 and '-', got {shown(key_id)}")
    return key_id


def new_key_entry(key_id: str | None = None) -> str:
    """A new keyring entry, `ID:BASE64` (32 random bytes), to put first in STRATUS_ENCRYPTION_KEYS.

    Args:
        key_id: the key's id; by default `k` + today's UTC date + 4 random hex digits (`k20261208-3fa9`), which
            sorts by age and does not repeat an older key's id.

    Raises:
        ValidationError: `key_id` is not 1 to 16 characters of a-z, 0-9 and '-'.
    """
    if key_id is None:
        key_id = f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"
    _check_key_id(key_id, "key_id")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode('ascii')}"


def new_secret() -> str:
    """32 random bytes in base64: a value for STRATUS_BLIND_INDEX_KEY."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


# -- keys -------------------------------------------------------------------------------------------------------


class Keyring:
    """The key-encryption keys, from STRATUS_ENCRYPTION_KEYS: each has an id; the first is the active one, which
    every new value and every wrapped data key is encrypted under. The others only decrypt what they encrypted
    before a rotation. Neither `repr` nor `str` shows key material; keys are never written to the database.
    """

    __slots__ = ("_active", "_aeads")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        """
        Args:
            keys: (id, 32 bytes) pairs, the active key first; ids unique, 1 to 16 of a-z, 0-9 and '-'.

        Raises:
            ValidationError: no key, a malformed id, a key that is not 32 bytes, or an id given twice.
        """
        if not isinstance(keys, (list, tuple)) or not keys:
            raise ValidationError(
                "keys must be a non-empty list of (key id, 32 bytes) pairs, the active key first"
            )
        aeads: dict[str, AESGCM] = {}
        for position, entry in enumerate(keys, start=1):
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise ValidationError(f"keys: entry {position} must be a (key id, 32 bytes) pair")
            key_id, material = entry
            _check_key_id(key_id, f"keys: the id of entry {position}")
            if not isinstance(material, bytes) or len(material) != KEY_BYTES:
                raise ValidationError(f"keys: key {key_id!r} must be exactly {KEY_BYTES} bytes")
            if key_id in aeads:
                raise ValidationError(f"keys: key id {key_id!r} is given twice; ids must be unique")
            aeads[key_id] = AESGCM(material)
        self._aeads = aeads
        self._active = next(iter(aeads))

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Read the STRATUS_ENCRYPTION_KEYS format: `ID:BASE64` entries separated by commas (spaces and line breaks
        around them are ignored), the active key first, e.g. `k2:<base64 of 32 bytes>,k1:<base64 of 32 bytes>`.
        Standard or URL-safe base64, padding optional.

        Raises:
            ConfigurationError: naming STRATUS_ENCRYPTION_KEYS and the entry by position; never quoting the key
                material (nor anything that might be it: only well-formed ids are quoted).
        """
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(
                f"{KEYS_VARIABLE} is empty: set it to ID:BASE64 entries separated by commas, the active key first "
                "(`stratus-db generate-key` prints one)"
            )
        entries: list[tuple[str, bytes]] = []
        seen: set[str] = set()
        for position, entry in enumerate(text.split(","), start=1):
            key_id, colon, encoded = entry.strip().partition(":")
            if not colon:
                raise ConfigurationError(
                    f"{KEYS_VARIABLE}: entry {position} is not ID:BASE64 (write each key as its id, a colon and "
                    "the base64 of 32 bytes; entries are separated by commas)"
                )
            if _KEY_ID.fullmatch(key_id) is None:
                raise ConfigurationError(
                    f"{KEYS_VARIABLE}: the key id of entry {position} must be 1 to 16 characters of a-z, 0-9 "
                    "and '-'"
                )
            if key_id in seen:
                raise ConfigurationError(
                    f"{KEYS_VARIABLE}: key id {key_id!r} appears twice; ids must be unique"
                )
            material = _key_material(encoded)
            if material is None:
                raise ConfigurationError(
                    f"{KEYS_VARIABLE}: key {key_id!r} (entry {position}) is not the base64 of exactly "
                    f"{KEY_BYTES} bytes"
                )
            seen.add(key_id)
            entries.append((key_id, material))
        return cls(entries)

    @property
    def active_id(self) -> str:
        """The id of the key new values are encrypted under."""
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key's id, the active one first."""
        return tuple(self._aeads)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._aeads

    def __repr__(self) -> str:
        return f"Keyring(active_id={self._active!r}, key_ids={self.key_ids!r})"

    __str__ = __repr__

    def _aead(self, key_id: str) -> AESGCM | None:
        return self._aeads.get(key_id)


class DataKey:
    """One user's data key, unwrapped (FieldCipher.new_data_key, unwrap_data_key): values encrypted under it are
    readable only while its wrapped form exists, so destroying that erases them (crypto-shredding). Its `repr` shows
    the ids, never the key."""

    __slots__ = ("_aead", "_key_id", "_material", "_user_id")

    def __init__(self, user_id: uuid.UUID, key_id: str, material: bytes) -> None:
        self._user_id = parse_uuid(user_id, "user_id")
        self._key_id = _check_key_id(key_id, "key_id")
        if not isinstance(material, bytes) or len(material) != KEY_BYTES:
            raise ValidationError(f"a data key must be exactly {KEY_BYTES} bytes")
        self._material = material
        self._aead = AESGCM(material)

    @property
    def user_id(self) -> uuid.UUID:
        """Whose key it is: its wrapped form unwraps for this user only."""
        return self._user_id

    @property
    def key_id(self) -> str:
        """The id its values name (8 hex digits for the keys new_data_key draws)."""
        return self._key_id

    def __repr__(self) -> str:
        return f"DataKey(user_id={str(self.user_id)!r}, key_id={self.key_id!r})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Cell:
    """Where an encrypted value lives: bound into its associated data, so that the value decrypts only there.

    `table` and `column` are 1 to 128 characters of A-Z, a-z, 0-9, `_`, `.` and `-` (a column may be a path into a
    JSON document, e.g. `changes.email`); `row_id` is the row's UUID (or its text form).

    Raises:
        ValidationError: a malformed table, column or row id.
    """

    table: str
    column: str
    row_id: uuid.UUID
    _tail: bytes = field(init=False, repr=False, compare=False)
    """The cell's fields of the associated data, encoded once."""

    def __post_init__(self) -> None:
        prefix = _column_fields(self.table, self.column)
        row_id = parse_uuid(self.row_id, "row_id")
        object.__setattr__(self, "row_id", row_id)
        object.__setattr__(self, "_tail", prefix + _fields(row_id.bytes))

    def __str__(self) -> str:
        return f"{self.table}.{self.column} of row {self.row_id}"


def _column_fields(table: object, column: object) -> bytes:
    """The table's and column's fields of a cell's associated data; a ValidationError naming a malformed one."""
    if not (isinstance(table, str) and isinstance(column, str)):
        name, value = ("table", table) if not isinstance(table, str) else ("column", column)
        raise ValidationError(f"{name} must be text (str), got {type(value).__name__}")
    # A program names few columns: checking and encoding each once keeps a Cell cheap to build per value.
    return _checked_column_fields(table, column)


@functools.lru_cache(maxsize=4096)
def _checked_column_fields(table: str, column: str) -> bytes:
    for name, value in (("table", table), ("column", column)):
        if _NAME.fullmatch(value) is None:
            raise ValidationError(
                f"{name} must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '.' and '-', got {shown(value)}"
            )
    return _fields(table.encode("ascii"), column.encode("ascii"))


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What a token says about itself, in clear (FieldCipher.inspect)."""

    version: str
    kind: KeyKind
    key_id: str


def _split(token: object, what: str) -> tuple[TokenInfo, bytes]:
    if not isinstance(token, str):
        raise ValidationError(f"{what} must be an encrypted token (str), got {type(token).__name__}")
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise DecryptionError(_malformed(token, what))
    kind, key_id, payload = match.groups()
    try:
        raw = _b64decode(payload)
    except (binascii.Error, ValueError):
        raise DecryptionError(f"{what} is a malformed token: its payload is not base64url") from None
    if len(raw) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError(f"{what} is a malformed token: its payload is too short")
    return TokenInfo(FORMAT_VERSION, _KIND_OF[kind], key_id), raw


def _malformed(token: str, what: str) -> str:
    """Why `token` is not a token, without quoting it (it may be a plaintext stored before encryption)."""
    version = token.partition(":")[0]
    if version != FORMAT_VERSION:
        known = re.fullmatch(r"v[0-9]{1,4}", version) is not None
        return (
            f"{what} is not a token of this version of stratus_db (format {version if known else 'unknown'}; "
            f"this version reads {FORMAT_VERSION})"
        )
    return (
        f"{what} is a malformed token: expected {FORMAT_VERSION}:KIND:KEY_ID:BASE64URL, KIND one of k, u, w"
    )


def _seal(aead: AESGCM, plaintext: bytes, associated_data: bytes) -> bytes:
    # A random nonce per value: at most about 2**32 values per key keep the collision risk negligible (NIST
    # SP 800-38D), far more than a key encrypts between rotations (docs/security.md).
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, associated_data)


def _open(aead: AESGCM, raw: bytes, associated_data: bytes) -> bytes | None:
    try:
        return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated_data)
    except InvalidTag:
        return None


# -- field encryption -------------------------------------------------------------------------------------------


class FieldCipher:
    """Encrypts and decrypts field values for one keyring.

    Each value is bound to its cell (table, column, row id) and to the token's format, kind and key id as AES-GCM
    associated data: a token copied to another row, column or table, or altered in any byte, raises
    DecryptionError. Given `data_key=`, a value is encrypted under that user's data key instead of the active
    keyring key; a token says which kind of key it needs, so decrypting reads both kinds (pass the user's data key
    whenever the value may be under it).

    Typed values: text (`encrypt`), JSON (`encrypt_json`), dates (`encrypt_date`) and aware datetimes
    (`encrypt_datetime`) carry their type inside the ciphertext, and each `decrypt_*` returns its own type or
    raises DecryptionError naming the one to use.
    """

    __slots__ = ("_keyring",)

    def __init__(self, keyring: Keyring) -> None:
        if not isinstance(keyring, Keyring):
            raise ValidationError(f"keyring must be a Keyring, got {type(keyring).__name__}")
        self._keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def __repr__(self) -> str:
        return f"FieldCipher({self._keyring!r})"

    # typed values

    def encrypt(self, value: str, cell: Cell, *, data_key: DataKey | None = None) -> str:
        """Encrypt text (any Unicode text, NUL included) for `cell`.

        Args:
            value: the plaintext.
            cell: where the token will be stored.
            data_key: the owner's data key (crypto-shreddable); None: the active keyring key.

        Returns:
            The token to store.

        Raises:
            ValidationError: `value` is not str, holds a lone surrogate, or is larger than MAX_PLAINTEXT_BYTES;
                `cell` or `data_key` is of the wrong type. Messages never quote the value.
        """
        if not isinstance(value, str):
            raise ValidationError(f"value must be text (str), got {type(value).__name__}")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("value must be valid Unicode text: it holds a lone surrogate") from None
        return self._encrypt(_TEXT + encoded, cell, data_key)

    def decrypt(self, token: str, cell: Cell, *, data_key: DataKey | None = None) -> str:
        """The text `encrypt` encrypted for `cell`.

        Raises:
            DecryptionError: the token is malformed or altered, belongs to another cell, needs a key not given
                (a keyring key not configured, or a data key other than `data_key`), or holds another type.
            ValidationError: `token` is not str, or `cell`/`data_key` is of the wrong type.
        """
        return self._decrypt(token, cell, data_key, _TEXT).decode("utf-8")

    def encrypt_json(self, value: JsonValue, cell: Cell, *, data_key: DataKey | None = None) -> str:
        """Encrypt a JSON value (object, array, text, number, boolean or null) as compact UTF-8 JSON.

        Raises:
            ValidationError: not JSON within the library's limits (text keys, storable text, no NaN or infinity,
                at most 32 levels and 256 KiB: kit/validation.py SafeJson), or a wrong `cell`/`data_key`.
        """
        try:
            checked = _JSON.validate_python(value)
        except PydanticValidationError as exc:
            problems = "; ".join(
                str(error["msg"]).removeprefix("Value error, ") for error in exc.errors(include_input=False)
            )
            raise ValidationError(f"value must be a JSON value: {problems}") from None
        encoded = json.dumps(checked, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return self._encrypt(_JSON_VALUE + encoded.encode("utf-8"), cell, data_key)

    def decrypt_json(self, token: str, cell: Cell, *, data_key: DataKey | None = None) -> JsonValue:
        """The JSON value `encrypt_json` encrypted for `cell` (Raises: as `decrypt`)."""
        decoded: JsonValue = json.loads(self._decrypt(token, cell, data_key, _JSON_VALUE))
        return decoded

    def encrypt_date(self, value: date, cell: Cell, *, data_key: DataKey | None = None) -> str:
        """Encrypt a calendar date (ISO 8601, `YYYY-MM-DD`).

        Raises:
            ValidationError: not a `date` (a `datetime` goes to `encrypt_datetime`), or a wrong `cell`/`data_key`.
        """
        if not isinstance(value, date) or isinstance(value, datetime):
            raise ValidationError(
                f"value must be a date (a datetime goes to encrypt_datetime), got {type(value).__name__}"
            )
        return self._encrypt(_DATE + value.isoformat().encode("ascii"), cell, data_key)

    def decrypt_date(self, token: str, cell: Cell, *, data_key: DataKey | None = None) -> date:
        """The date `encrypt_date` encrypted for `cell` (Raises: as `decrypt`)."""
        return date.fromisoformat(self._decrypt(token, cell, data_key, _DATE).decode("ascii"))

    def encrypt_datetime(self, value: datetime, cell: Cell, *, data_key: DataKey | None = None) -> str:
        """Encrypt an instant: a time-zone-aware datetime, stored in UTC (ISO 8601 with `+00:00`).

        Raises:
            ValidationError: not a datetime, naive, past year 9999 in UTC, or a wrong `cell`/`data_key`.
        """
        if not isinstance(value, datetime):
            raise ValidationError(f"value must be a time-zone-aware datetime, got {type(value).__name__}")
        if value.utcoffset() is None:
            raise ValidationError("value must be a time-zone-aware datetime, got a naive one")
        try:
            instant = in_utc(value)
        except ValueError as exc:
            raise ValidationError(f"value {exc}") from None
        return self._encrypt(_DATETIME + instant.isoformat().encode("ascii"), cell, data_key)

    def decrypt_datetime(self, token: str, cell: Cell, *, data_key: DataKey | None = None) -> datetime:
        """The instant `encrypt_datetime` encrypted for `cell`, aware, in UTC (Raises: as `decrypt`)."""
        return datetime.fromisoformat(self._decrypt(token, cell, data_key, _DATETIME).decode("ascii"))

    def decrypt_value(
        self, token: str, cell: Cell, *, data_key: DataKey | None = None
    ) -> str | date | datetime | JsonValue:
        """The value any `encrypt_*` encrypted for `cell`, as the type it was encrypted as (read from the token's
        plaintext): for code that stores values of several types in one way (Raises: as `decrypt`)."""
        _check_cell(cell)
        if data_key is not None and not isinstance(data_key, DataKey):
            raise ValidationError(f"data_key must be a DataKey or None, got {type(data_key).__name__}")
        info, raw = _split(token, "token")
        plaintext = self._open_value(info, raw, cell, data_key)
        kind, body = plaintext[:1], plaintext[1:]
        if kind == _TEXT:
            return body.decode("utf-8")
        if kind == _DATE:
            return date.fromisoformat(body.decode("ascii"))
        if kind == _DATETIME:
            return datetime.fromisoformat(body.decode("ascii"))
        if kind == _JSON_VALUE:
            decoded: JsonValue = json.loads(body)
            return decoded
        raise DecryptionError(f"{cell} holds a value of an unknown type")

    # rotation

    def inspect(self, token: str) -> TokenInfo:
        """The format, key kind and key id a token names (no decryption; its integrity is not checked).

        Raises:
            DecryptionError: not a token of this format. ValidationError: `token` is not str.
        """
        return _split(token, "token")[0]

    def needs_rotation(self, token: str) -> bool:
        """Whether `token` (a value or a wrapped data key) is under a keyring key other than the active one.
        Values under a data key never are: rotating the keyring rewraps their data key instead.

        Raises:
            DecryptionError: not a token of this format. ValidationError: `token` is not str.
        """
        info = _split(token, "token")[0]
        return info.kind is not KeyKind.data and info.key_id != self._keyring.active_id

    def reencrypt(self, token: str, cell: Cell) -> str:
        """The same value encrypted under the active keyring key, for a value encrypted directly under a keyring
        key (kind `k`); a token already under the active key is returned unchanged, so a job may run again.

        Raises:
            ValidationError: `token` is under a data key (rewrap the user's data key with `rewrap_data_key`
                instead) or is not str; `cell` is not a Cell.
            DecryptionError: as `decrypt`.
        """
        _check_cell(cell)
        info, raw = _split(token, "token")
        if info.kind is KeyKind.data:
            raise ValidationError(
                "token is under a user's data key, which a keyring rotation leaves as it is: rewrap the user's "
                "wrapped data key with rewrap_data_key instead"
            )
        if info.kind is KeyKind.wrapped:
            raise ValidationError("token is a wrapped data key: rotate it with rewrap_data_key")
        if info.key_id == self._keyring.active_id:
            return token
        return self._encrypt(self._open_value(info, raw, cell, None), cell, None)

    # per-user data keys

    def new_data_key(self, user_id: uuid.UUID) -> tuple[DataKey, str]:
        """A new random data key for `user_id`, and its wrapped form (kind `w`, under the active keyring key, bound
        to the user id) to store; the unwrapped key is never stored.

        Raises:
            ValidationError: `user_id` is not a UUID.
        """
        user = parse_uuid(user_id, "user_id")
        data_key = DataKey(user, secrets.token_hex(4), secrets.token_bytes(KEY_BYTES))
        return data_key, self._wrap(data_key)

    def unwrap_data_key(self, wrapped: str, user_id: uuid.UUID) -> DataKey:
        """The data key `new_data_key` (or `rewrap_data_key`) wrapped for `user_id`.

        Raises:
            DecryptionError: malformed or altered, wrapped for another user, or under a key the keyring lacks.
            ValidationError: `wrapped` is not str, or `user_id` is not a UUID.
        """
        user = parse_uuid(user_id, "user_id")
        info, raw = _split(wrapped, "wrapped")
        if info.kind is not KeyKind.wrapped:
            raise DecryptionError(
                f"wrapped is not a wrapped data key (its kind is {info.kind.value!r}, not 'w')"
            )
        aead = self._keyring_aead(info.key_id, f"the data key of user {user}")
        plaintext = _open(aead, raw, _associated_data(KeyKind.wrapped, info.key_id, _owner(user)))
        if plaintext is None:
            raise DecryptionError(
                f"the data key of user {user} does not unwrap with key {info.key_id!r}: it was altered, or "
                "belongs to another user"
            )
        return DataKey(user, plaintext[KEY_BYTES:].decode("ascii"), plaintext[:KEY_BYTES])

    def rewrap_data_key(self, wrapped: str, user_id: uuid.UUID) -> str:
        """The same data key wrapped under the active keyring key: after a rotation, the only write a user's
        values need (they stay encrypted under the unchanged data key). Already under the active key: returned
        unchanged.

        Raises:
            as `unwrap_data_key`.
        """
        data_key = self.unwrap_data_key(wrapped, user_id)
        if self.inspect(wrapped).key_id == self._keyring.active_id:
            return wrapped
        return self._wrap(data_key)

    # internals

    def _wrap(self, data_key: DataKey) -> str:
        active = self._keyring.active_id
        aead = self._keyring._aead(active)
        assert aead is not None
        plaintext = data_key._material + data_key.key_id.encode("ascii")
        associated = _associated_data(KeyKind.wrapped, active, _owner(data_key.user_id))
        return f"{FORMAT_VERSION}:{KeyKind.wrapped.value}:{active}:{_b64encode(_seal(aead, plaintext, associated))}"

    def _encrypt(self, plaintext: bytes, cell: Cell, data_key: DataKey | None) -> str:
        _check_cell(cell)
        if len(plaintext) - 1 > MAX_PLAINTEXT_BYTES:
            raise ValidationError(
                f"value is {len(plaintext) - 1:,} bytes; at most {MAX_PLAINTEXT_BYTES:,} are encrypted in one value"
            )
        if data_key is None:
            kind, key_id = KeyKind.keyring, self._keyring.active_id
            aead = self._keyring._aead(key_id)
            assert aead is not None
        elif isinstance(data_key, DataKey):
            kind, key_id, aead = KeyKind.data, data_key.key_id, data_key._aead
        else:
            raise ValidationError(f"data_key must be a DataKey or None, got {type(data_key).__name__}")
        sealed = _seal(aead, plaintext, _associated_data(kind, key_id, cell._tail))
        return f"{FORMAT_VERSION}:{kind.value}:{key_id}:{_b64encode(sealed)}"

    def _decrypt(self, token: str, cell: Cell, data_key: DataKey | None, expected: bytes) -> bytes:
        _check_cell(cell)
        if data_key is not None and not isinstance(data_key, DataKey):
            raise ValidationError(f"data_key must be a DataKey or None, got {type(data_key).__name__}")
        info, raw = _split(token, "token")
        plaintext = self._open_value(info, raw, cell, data_key)
        stored = plaintext[:1]
        if stored != expected:
            raise DecryptionError(
                f"{cell} holds {_TYPE_NAMES.get(stored, 'an unknown type')}, not {_TYPE_NAMES[expected]}"
                + (f": read it with {_READER[stored]}" if stored in _READER else "")
            )
        return plaintext[1:]

    def _open_value(self, info: TokenInfo, raw: bytes, cell: Cell, data_key: DataKey | None) -> bytes:
        if info.kind is KeyKind.keyring:
            aead = self._keyring_aead(info.key_id, cell)
        elif info.kind is KeyKind.data:
            if data_key is None:
                raise DecryptionError(
                    f"{cell} is encrypted under a user's data key ({info.key_id!r}): pass data_key (none exists "
                    "any more if the user was erased)"
                )
            if data_key.key_id != info.key_id:
                raise DecryptionError(
                    f"{cell} is encrypted under data key {info.key_id!r}, not {data_key.key_id!r} (that of user "
                    f"{data_key.user_id})"
                )
            aead = data_key._aead
        else:
            raise DecryptionError(
                f"{cell} holds a wrapped data key, not a value: unwrap it with unwrap_data_key"
            )
        plaintext = _open(aead, raw, _associated_data(info.kind, info.key_id, cell._tail))
        if plaintext is None:
            raise DecryptionError(
                f"{cell} does not decrypt with key {info.key_id!r}: the value was altered, or was encrypted for "
                "another table, column or row"
            )
        return plaintext

    def _keyring_aead(self, key_id: str, what: object) -> AESGCM:
        aead = self._keyring._aead(key_id)
        if aead is None:
            raise DecryptionError(
                f"{what} is encrypted under key {key_id!r}, which {KEYS_VARIABLE} does not hold (it holds "
                f"{', '.join(self._keyring.key_ids)}): add that key back after the active one"
            )
        return aead


def _owner(user_id: uuid.UUID) -> bytes:
    """The tail of a wrapped data key's associated data: it unwraps for this user only."""
    return _fields(b"data-key", user_id.bytes)


def _check_cell(cell: object) -> None:
    if not isinstance(cell, Cell):
        raise ValidationError(f"cell must be a Cell(table, column, row_id), got {type(cell).__name__}")


# -- blind index ------------------------------------------------------------------------------------------------


class BlindIndex:
    """Keyed hashes for equality lookups and uniqueness on encrypted values, from STRATUS_BLIND_INDEX_KEY: the
    e-mail's index is HMAC-SHA-256 of the normalised address (stripped, lower-cased) under a key derived from the
    secret with HKDF-SHA-256 (info `stratus_db blind index v1: email`), as 64 lower-case hex digits; the CANAC's is
    the same under its own derived key (`canac`).

    The secret cannot rotate without recomputing every stored index (docs/security.md). Neither `repr` nor `str`
    shows it.
    """

    __slots__ = ("_audit_key", "_canac_key", "_email_key")

    def __init__(self, secret: bytes) -> None:
        """
        Raises:
            ValidationError: `secret` is not exactly 32 bytes.
        """
        if not isinstance(secret, bytes) or len(secret) != KEY_BYTES:
            raise ValidationError(f"secret must be exactly {KEY_BYTES} bytes")
        self._email_key = _derive(secret, "email")
        self._canac_key = _derive(secret, "canac")
        self._audit_key = _derive(secret, "audit field")

    @classmethod
    def parse(cls, text: str) -> BlindIndex:
        """Read STRATUS_BLIND_INDEX_KEY: the base64 (standard or URL-safe) of 32 bytes.

        Raises:
            ConfigurationError: naming the variable, never quoting its value.
        """
        material = _key_material(text) if isinstance(text, str) else None
        if material is None:
            raise ConfigurationError(
                f"{BLIND_INDEX_VARIABLE} must be the base64 of exactly {KEY_BYTES} bytes "
                "(`stratus-db generate-key --blind-index` prints one)"
            )
        return cls(material)

    def email(self, address: str) -> str:
        """The blind index of an e-mail address: equal for addresses equal once stripped and lower-cased.

        Raises:
            ValidationError: not text, empty, longer than 320 characters, or holding a lone surrogate; the message
                never quotes the address.
        """
        if not isinstance(address, str):
            raise ValidationError(f"address must be text (str), got {type(address).__name__}")
        normalised = address.strip().lower()
        if not normalised or len(normalised) > MAX_EMAIL_CHARS:
            raise ValidationError(f"address must be 1 to {MAX_EMAIL_CHARS} characters once stripped")
        try:
            encoded = normalised.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("address must be valid Unicode text: it holds a lone surrogate") from None
        # The standard library's HMAC is C code (OpenSSL), as fast as cryptography's and simpler to call.
        return hmac.digest(self._email_key, encoded, "sha256").hex()

    def canac(self, code: str) -> str:
        """The blind index of a CANAC (the person's ANAC code, validated by the caller), under its own derived key
        (info `stratus_db blind index v1: canac`): 64 lower-case hex digits.

        Raises:
            ValidationError: not text of 1 to 16 ASCII characters once stripped; the message never quotes it.
        """
        if not isinstance(code, str):
            raise ValidationError(f"code must be text (str), got {type(code).__name__}")
        normalised = code.strip()
        if not (0 < len(normalised) <= 16 and normalised.isascii()):
            raise ValidationError("code must be 1 to 16 ASCII characters once stripped")
        return hmac.digest(self._canac_key, normalised.encode("ascii"), "sha256").hex()

    def audit_field(self, data: bytes) -> str:
        """The keyed hash of one field of an audit row (audit/sealing.py), under its own derived key (info `…
        audit field`): without the secret, a stored hash cannot be checked against guesses (an IP address, an id)."""
        return hmac.digest(self._audit_key, data, "sha256").hex()

    def __repr__(self) -> str:
        return "BlindIndex(purposes=('email', 'canac', 'audit field'))"

    __str__ = __repr__


def _derive(secret: bytes, purpose: str) -> bytes:
    """One key per purpose: an index computed for one purpose says nothing about another's."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=_BLIND_INDEX_INFO + purpose.encode("ascii"),
    ).derive(secret)


def is_token(value: object) -> bool:
    """Whether `value` has the form of a token of this format (its integrity is not checked)."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


@functools.cache
def ed25519_public_key(pem: str) -> Ed25519PublicKey:
    """The Ed25519 public key in `pem` (parsed once per text).

    Raises:
        ValueError: not a PEM public key, or not an Ed25519 one.
    """
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ValueError("must be an Ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(
            f"must be an Ed25519 public key, got a {type(key).__name__.removesuffix('PublicKey')} one"
        )
    return key


@functools.cache
def ed25519_private_key(pem: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in `pem` (unencrypted PKCS#8, parsed once per text).

    Raises:
        ValueError: not an unencrypted PEM private key, or not an Ed25519 one.
    """
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError(
            "must be an unencrypted Ed25519 private key in PEM (-----BEGIN PRIVATE KEY-----)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(
            f"must be an Ed25519 private key, got a {type(key).__name__.removesuffix('PrivateKey')} one"
        )
    return key
