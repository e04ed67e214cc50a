"""Who is calling: a bearer token — a JWT (HS256, with expiry and audience), or a service's API key
(security/api_keys.py) — resolved to the access-control Principal.

The managers decide what a principal may do (security/policy.py); the service only establishes who it is. A token's
claims: `sub` (the principal's id: a user's id, an agent's name…), `kind` (user, agent, admin, auditor, system),
`acting_for` (an agent's user), `aud` (STRATUS_API_AUDIENCE) and `exp`. `stratus-db create-token` issues them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError as PydanticValidationError

from stratus_db.config import Settings
from stratus_db.errors import ConfigurationError, StratusError
from stratus_db.security.api_keys import KEY_PREFIX, ApiKeyManager
from stratus_db.security.principal import Principal, PrincipalKind

ALGORITHM = "HS256"
MAX_TOKEN_LIFETIME = timedelta(days=366)


class UnauthenticatedError(StratusError):
    """No credentials, or credentials that do not hold (HTTP 401)."""


def _secret(settings: Settings) -> str:
    if settings.STRATUS_API_JWT_SECRET is None:
        raise ConfigurationError(
            "STRATUS_API_JWT_SECRET is not set: the service cannot check or issue tokens"
        )
    return settings.STRATUS_API_JWT_SECRET.get_secret_value()


def issue_token(
    settings: Settings, principal: Principal, lifetime: timedelta, *, now: datetime | None = None
) -> str:
    """A bearer token for `principal`, valid for `lifetime` (at most a year).

    Raises:
        ConfigurationError: STRATUS_API_JWT_SECRET is not set.
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
    return jwt.encode(claims, _secret(settings), algorithm=ALGORITHM)


def principal_of(settings: Settings, token: str) -> Principal:
    """The principal a token names.

    Raises:
        UnauthenticatedError: the token is malformed, signed with another key, expired, for another audience, or
            names no valid principal.
    """
    try:
        claims = jwt.decode(
            token,
            _secret(settings),
            algorithms=[ALGORITHM],
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
    db = request.app.state.db
    if credentials.credentials.startswith(KEY_PREFIX):
        principal = await ApiKeyManager(db).principal_for(credentials.credentials)
        if principal is None:
            raise UnauthenticatedError("the API key was refused: unknown, revoked or expired")
        return principal
    return principal_of(db.settings, credentials.credentials)
