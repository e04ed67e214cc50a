"""/v1/users: register, read, change and list users."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from stratus_db.api.context import Caller, Db
from stratus_db.api.problems import responses
from stratus_db.errors import NotFoundError
from stratus_db.kit.schemas import Page
from stratus_db.users.manager import UserManager
from stratus_db.users.schemas import CredentialRead, CredentialStatus, UserRead

router = APIRouter(prefix="/v1/users", tags=["users"])


class NewUser(BaseModel):
    name: str
    email: str
    role: str
    licenses: list[str] = Field(default_factory=list)
    experience_level: str | None = None
    preferences: dict[str, Any] = Field(default_factory=dict)
    birth_date: date | None = None
    canac: str | None = None


class UserChanges(BaseModel):
    """The fields to change; a field left out keeps its value (experience_level, birth_date and canac can be set to
    null to clear them)."""

    name: str | None = None
    email: str | None = None
    role: str | None = None
    licenses: list[str] | None = None
    experience_level: str | None = None
    preferences: dict[str, Any] | None = None
    birth_date: date | None = None
    canac: str | None = None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserRead, responses=responses(403, 409))
async def create_user(body: NewUser, caller: Caller, db: Db) -> UserRead:
    return await UserManager(db).create_user(**body.model_dump(), principal=caller)


@router.get("/{user_id}", response_model=UserRead, responses=responses(403, 404))
async def get_user(user_id: uuid.UUID, caller: Caller, db: Db) -> UserRead:
    user = await UserManager(db).get_user(user_id, principal=caller)
    if user is None:
        raise NotFoundError(f"user {user_id} does not exist")
    return user


@router.patch("/{user_id}", response_model=UserRead, responses=responses(403, 404, 409))
async def update_user(user_id: uuid.UUID, body: UserChanges, caller: Caller, db: Db) -> UserRead:
    return await UserManager(db).update_user(user_id, principal=caller, **body.model_dump(exclude_unset=True))


@router.get("", response_model=Page[UserRead], responses=responses(403))
async def list_users(
    caller: Caller,
    db: Db,
    role: str | None = Query(None, max_length=50),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=500),
) -> Page[UserRead]:
    return await UserManager(db).list_users(role=role, limit=limit, cursor=cursor, principal=caller)


class Deactivation(BaseModel):
    reason: str


class NewCredential(BaseModel):
    code: str
    """Any spelling the ANAC catalogue reads: "pp", "CMA-1", "TIPO:A320"."""
    number: str | None = None
    issued_at: date | None = None
    expires_at: date | None = None
    restrictions: str | None = None


class CredentialChanges(BaseModel):
    number: str | None = None
    issued_at: date | None = None
    expires_at: date | None = None
    restrictions: str | None = None


@router.patch("/{user_id}/preferences", response_model=UserRead, responses=responses(403, 404))
async def update_preferences(user_id: uuid.UUID, patch: dict[str, Any], caller: Caller, db: Db) -> UserRead:
    """A JSON merge patch (RFC 7396) of the user's preferences: null removes a key."""
    return await UserManager(db).update_preferences(user_id, patch, principal=caller)


@router.post("/{user_id}/deactivate", response_model=UserRead, responses=responses(403, 404, 409))
async def deactivate_user(user_id: uuid.UUID, body: Deactivation, caller: Caller, db: Db) -> UserRead:
    return await UserManager(db).deactivate_user(user_id, body.reason, principal=caller)


@router.post("/{user_id}/reactivate", response_model=UserRead, responses=responses(403, 404, 409))
async def reactivate_user(user_id: uuid.UUID, caller: Caller, db: Db) -> UserRead:
    return await UserManager(db).reactivate_user(user_id, principal=caller)


@router.post(
    "/{user_id}/credentials",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialRead,
    responses=responses(403, 404, 409),
)
async def add_credential(user_id: uuid.UUID, body: NewCredential, caller: Caller, db: Db) -> CredentialRead:
    return await UserManager(db).add_credential(
        user_id, body.code, **body.model_dump(exclude={"code"}), principal=caller
    )


@router.patch(
    "/{user_id}/credentials/{credential_id}", response_model=CredentialRead, responses=responses(403, 404)
)
async def update_credential(
    user_id: uuid.UUID, credential_id: uuid.UUID, body: CredentialChanges, caller: Caller, db: Db
) -> CredentialRead:
    return await UserManager(db).update_credential(
        user_id, credential_id, principal=caller, **body.model_dump(exclude_unset=True)
    )


@router.delete(
    "/{user_id}/credentials/{credential_id}", response_model=CredentialRead, responses=responses(403, 404)
)
async def remove_credential(
    user_id: uuid.UUID, credential_id: uuid.UUID, caller: Caller, db: Db
) -> CredentialRead:
    return await UserManager(db).remove_credential(user_id, credential_id, principal=caller)


@router.get(
    "/{user_id}/credentials/status", response_model=list[CredentialStatus], responses=responses(403, 404)
)
async def credential_status(
    user_id: uuid.UUID, caller: Caller, db: Db, on: date | None = None
) -> list[CredentialStatus]:
    """Each credential's state (valid, expiring within 30 days, expired, no expiry) on `on` (default: today in
    Brasília). Reading medical certificates is audited."""
    return await UserManager(db).credential_status(user_id, on=on, principal=caller)


credentials_router = APIRouter(prefix="/v1/credentials", tags=["users"])


@credentials_router.get("/expiring", response_model=Page[CredentialRead], responses=responses(403))
async def expiring_credentials(
    caller: Caller,
    db: Db,
    within_days: int = Query(ge=0, le=3660),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=500),
) -> Page[CredentialRead]:
    """Credentials of every user expiring within `within_days` (administrators)."""
    return await UserManager(db).expiring_credentials(
        within_days, limit=limit, cursor=cursor, principal=caller
    )
