"""Who is calling: a bearer token — a JWT (HS256 with STRATUS_API_JWT_SECRET, or EdDSA checked with
STRATUS_API_JWT_PUBLIC_KEY; with expiry and audience), or a service's API key (security/api_keys.py) — resolved to
the access-control Principal.

The managers decide what a principal may do (security/policy.py); the service only establishes who it is. A token's
claims: `sub` (the principal's id: a user's id, an agent's name…), `kind` (user, agent, admin, auditor, system),
`acting_for` (an agent's user), `aud` (STRATUS_API_AUDIENCE) and `exp`. `stratus-db create-token` issues them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError as PydanticValidationError

from stratus_db.config import Settings
from stratus_db.errors import ConfigurationError, StratusError
from stratus_db.kit.validation import shown
from stratus_db.security.api_keys import KEY_PREFIX, ApiKeyManager
from stratus_db.security.crypto import ed25519_private_key, ed25519_public_key
from stratus_db.security.principal import Principal, PrincipalKind

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

HMAC, EDDSA = "HS256", "EdDSA"
MAX_TOKEN_LIFETIME = timedelta(days=366)


class UnauthenticatedError(StratusError):
    """No credentials, or credentials that do not hold (HTTP 401)."""


def _verification_keys(settings: Settings) -> dict[str, Any]:
    """The key of each accepted algorithm: a token is checked with its algorithm's key alone (never a public key as an
    HMAC secret)."""
    keys: dict[str, Any] = {}
    if settings.STRATUS_API_JWT_SECRET is not None:
        keys[HMAC] = settings.STRATUS_API_JWT_SECRET.get_secret_value()
    if settings.STRATUS_API_JWT_PUBLIC_KEY is not None:
        keys[EDDSA] = ed25519_public_key(settings.STRATUS_API_JWT_PUBLIC_KEY)
    elif settings.STRATUS_API_JWT_PRIVATE_KEY is not None:
        keys[EDDSA] = ed25519_private_key(
            settings.STRATUS_API_JWT_PRIVATE_KEY.get_secret_value()
        ).public_key()
    if not keys:
        raise ConfigurationError(
            "neither STRATUS_API_JWT_SECRET nor STRATUS_API_JWT_PUBLIC_KEY is set: the service cannot check tokens"
        )
    return keys


def issue_token(
    settings: Settings, principal: Principal, lifetime: timedelta, *, now: datetime | None = None
) -> str:
    """A bearer token for `principal`, valid for `lifetime` (at most a year).

    Signed with STRATUS_API_JWT_PRIVATE_KEY (EdDSA) where it is set, else with STRATUS_API_JWT_SECRET (HS256).

    Raises:
        ConfigurationError: neither key is set.
        ValueError: the lifetime is not positive or is over a year.
    """
    if not timedelta(0) < lifetime <= MAX_TOKEN_LIFETIME:
        raise ValueError(f"a token's lifetime is between 1 second and {MAX_TOKEN_LIFETIME.days} days")
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": principal.id,
        "kind": principal.kind.value,
        "aud": settings.STRATUS_API_AUDIENCE,
        "iat": issued,
        "exp": issued + lifetime,
    }
    if principal.kind is PrincipalKind.agent:
        claims["acting_for"] = str(principal.user_id)
    if settings.STRATUS_API_JWT_PRIVATE_KEY is not None:
        private = ed25519_private_key(settings.STRATUS_API_JWT_PRIVATE_KEY.get_secret_value())
        return jwt.encode(claims, private, algorithm=EDDSA)
    if settings.STRATUS_API_JWT_SECRET is None:
        raise ConfigurationError(
            "neither STRATUS_API_JWT_PRIVATE_KEY nor STRATUS_API_JWT_SECRET is set: no token can be signed"
        )
    return jwt.encode(claims, settings.STRATUS_API_JWT_SECRET.get_secret_value(), algorithm=HMAC)


def principal_of(settings: Settings, token: str) -> Principal:
    """The principal a token names.

    Raises:
        UnauthenticatedError: the token is malformed, signed with another key or an algorithm not configured,
            expired, for another audience, or names no valid principal.
        ConfigurationError: no key to check tokens with is configured.
    """
    keys = _verification_keys(settings)
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        if not isinstance(algorithm, str) or algorithm not in keys:
            raise UnauthenticatedError(
                f"the bearer token was refused: its algorithm {shown(algorithm)} is not accepted here "
                f"(accepted: {', '.join(keys)})"
            )
        claims = jwt.decode(
            token,
            keys[algorithm],
            algorithms=[algorithm],
            audience=settings.STRATUS_API_AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise UnauthenticatedError(f"the bearer token was refused: {exc}") from None
    kind, subject = claims.get("kind"), claims.get("sub")
    try:
        if kind == PrincipalKind.user.value:
            return Principal.for_user(uuid.UUID(str(subject)))
        if kind == PrincipalKind.agent.value:
            return Principal.agent(str(subject), acting_for=uuid.UUID(str(claims.get("acting_for"))))
        return Principal.model_validate({"kind": kind, "id": subject})
    except (ValueError, PydanticValidationError):
        raise UnauthenticatedError("the bearer token names no valid principal") from None


bearer_scheme = HTTPBearer(auto_error=False, description="A token from `stratus-db create-token`.")


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    """The calling principal (a FastAPI dependency): a service's API key (`sk_stratus_…`), else a JWT."""
    if credentials is None:
        raise UnauthenticatedError("this endpoint needs a bearer token (Authorization: Bearer …)")
    return await principal_for_token(request.app.state.db, credentials.credentials)


async def principal_for_token(db: StratusPostgreSQLIntegration, token: str) -> Principal:
    """The principal a bearer token (an API key or a JWT) stands for.

    Raises:
        UnauthenticatedError: the key or the token does not hold.
    """
    if token.startswith(KEY_PREFIX):
        principal = await ApiKeyManager(db).principal_for(token)
        if principal is None:
            raise UnauthenticatedError("the API key was refused: unknown, revoked or expired")
        return principal
    return principal_of(db.settings, token)
