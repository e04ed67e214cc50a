"""Keys for the services that call the HTTP service: each stands for one principal, is shown once when made, and is
kept only as the SHA-256 of its secret (a random 256-bit secret: a fast hash is enough, no one can guess it).

A key reads `sk_stratus_<key id, 32 hex>_<secret>`; the service takes it as a bearer token (docs/api.md). Operators
make keys (`stratus-db create-api-key`: trusted code only, as a key may stand for `system`), list and revoke them
(administrators too); each change is audited (table `api_keys`, never the secret or its hash). A user's or agent's
key is erased with the user (its `user_id`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, NamedTuple

from pydantic import StringConstraints
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction
from stratus_db.errors import NotFoundError, ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.kit.models import table_of
from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.validation import InputModel, SafeStr, Timestamp, parse_uuid, shown, validate_input
from stratus_db.models import ApiKeyRow
from stratus_db.security.principal import Principal, PrincipalKind

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

KEY_PREFIX = "sk_stratus_"
TABLE = "api_keys"
_keys = table_of(ApiKeyRow)


class ApiKey(FrozenModel):
    """A key as it is listed: never its secret."""

    key_id: uuid.UUID
    name: str
    principal_kind: PrincipalKind
    principal_id: str
    user_id: uuid.UUID | None
    """The user the key acts for: a user's own id, an agent's user; None for any other kind."""
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def principal(self) -> Principal:
        return Principal(kind=self.principal_kind, id=self.principal_id, user_id=self.user_id)


class NewApiKey(NamedTuple):
    """A key just made, and its token: give the token to the service it is for; it is not shown again."""

    key: ApiKey
    token: str


class _KeyRequest(InputModel):
    name: Annotated[SafeStr, StringConstraints(min_length=1, max_length=100)]
    expires_at: Timestamp | None = None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _parse(token: str) -> tuple[uuid.UUID, str] | None:
    """The key id and secret a token holds, or None if it is not a key's token."""
    if not token.startswith(KEY_PREFIX):
        return None
    key_hex, _, secret = token[len(KEY_PREFIX) :].partition("_")
    try:
        return uuid.UUID(hex=key_hex), secret
    except ValueError:
        return None


class ApiKeyManager:
    """Make, list, revoke keys, and tell which principal a token stands for. Every public method but `principal_for`
    takes a keyword-only `principal` (who makes the call): trusted code makes keys; administrators and trusted code
    list and revoke them."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db

    async def create_key(
        self,
        for_principal: Principal,
        name: str,
        *,
        expires_at: datetime | None = None,
        principal: Principal | None = None,
    ) -> NewApiKey:
        """A new key standing for `for_principal`, named `name` (what it is for), valid until `expires_at` (None:
        until revoked).

        Raises:
            ValidationError: `for_principal` is not a Principal, `name` is empty or over 100 characters, or
                `expires_at` is not a time-zone-aware instant in the future.
            PermissionDeniedError: not trusted code.
        """
        async with self._db.operation("api_key.create", principal=principal) as op:
            if not isinstance(for_principal, Principal):
                raise ValidationError(f"for_principal must be a Principal, got {shown(for_principal)}")
            request = validate_input(_KeyRequest, {"name": name, "expires_at": expires_at})
            now = self._db.clock()
            if request.expires_at is not None and request.expires_at <= now:
                raise ValidationError(
                    f"expires_at must be in the future, got {request.expires_at.isoformat()}"
                )
            await op.authorize(None)
            secret = secrets.token_urlsafe(32)
            key = ApiKey(
                key_id=new_id(),
                name=request.name,
                principal_kind=for_principal.kind,
                principal_id=for_principal.id,
                user_id=for_principal.user_id,
                created_at=now,
                expires_at=request.expires_at,
                revoked_at=None,
            )

            async def work(conn: AsyncConnection) -> None:
                await conn.execute(insert(_keys).values(key.model_dump() | {"secret_hash": _hash(secret)}))
                await AuditManager(self._db).record(
                    conn,
                    action=AuditAction.create,
                    table_name=TABLE,
                    record_id=key.key_id,
                    user_id=key.user_id,
                    new_values={"name": key.name, "stands_for": for_principal.actor}
                    | ({"expires_at": key.expires_at.isoformat()} if key.expires_at else {}),
                )

            await op.run(work, tx=None)
            return NewApiKey(key, f"{KEY_PREFIX}{key.key_id.hex}_{secret}")

    async def revoke_key(self, key_id: uuid.UUID | str, *, principal: Principal | None = None) -> ApiKey:
        """Revoke a key: the service refuses it from the next request on. Revoking it again changes nothing.

        Raises:
            ValidationError: `key_id` is not a UUID.
            NotFoundError: no such key.
            PermissionDeniedError: not trusted code or an administrator.
        """
        async with self._db.operation("api_key.revoke", principal=principal) as op:
            key_id = parse_uuid(key_id, "key_id")
            await op.authorize(None)
            now = self._db.clock()

            async def work(conn: AsyncConnection) -> ApiKey:
                row = (await conn.execute(select(_keys).where(_keys.c.key_id == key_id))).mappings().first()
                if row is None:
                    raise NotFoundError(f"API key {key_id} does not exist")
                key = ApiKey.model_validate(row)
                if key.revoked_at is not None:
                    return key
                await conn.execute(update(_keys).where(_keys.c.key_id == key_id).values(revoked_at=now))
                await AuditManager(self._db).record(
                    conn,
                    action=AuditAction.update,
                    table_name=TABLE,
                    record_id=key_id,
                    user_id=key.user_id,
                    old_values={"revoked_at": None},
                    new_values={"revoked_at": now.isoformat()},
                )
                return key.model_copy(update={"revoked_at": now})

            return await op.run(work, tx=None)

    async def list_keys(
        self, *, include_revoked: bool = False, principal: Principal | None = None
    ) -> list[ApiKey]:
        """Every key, oldest first (revoked ones too when `include_revoked`).

        Raises:
            ValidationError: `include_revoked` is not a bool.
            PermissionDeniedError: not trusted code or an administrator.
        """
        async with self._db.operation("api_key.list", read_only=True, principal=principal) as op:
            if not isinstance(include_revoked, bool):
                raise ValidationError(f"include_revoked must be True or False, got {shown(include_revoked)}")
            await op.authorize(None)
            statement = select(_keys).order_by(_keys.c.created_at, _keys.c.key_id)
            if not include_revoked:
                statement = statement.where(_keys.c.revoked_at.is_(None))

            async def work(conn: AsyncConnection) -> list[ApiKey]:
                return [ApiKey.model_validate(row) for row in (await conn.execute(statement)).mappings()]

            return await op.run(work, tx=None)

    async def principal_for(self, token: str) -> Principal | None:
        """The principal a key's token stands for; None when the token is not a key's, or names no key, or its secret
        does not match, or the key is revoked or expired. Authentication, not a call on anyone's data: no principal
        is needed to make it."""
        async with self._db.operation("api_key.authenticate", read_only=True) as op:
            parsed = _parse(token) if isinstance(token, str) else None
            if parsed is None:
                return None
            key_id, secret = parsed

            async def work(conn: AsyncConnection) -> Principal | None:
                row = (await conn.execute(select(_keys).where(_keys.c.key_id == key_id))).mappings().first()
                if row is None or not hmac.compare_digest(row["secret_hash"], _hash(secret)):
                    return None
                key = ApiKey.model_validate(row)
                if key.revoked_at is not None or (
                    key.expires_at is not None and key.expires_at <= self._db.clock()
                ):
                    return None
                return key.principal()

            return await op.run(work, tx=None)
