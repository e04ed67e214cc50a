"""/v1/users: register, read, change and list users (the request models' shared pieces: api/fields.py)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Body, Query, status
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    with_config,
)
from typing_extensions import TypedDict

from stratus_db.api.context import Caller, Db
from stratus_db.api.fields import (
    NOT_BLANK,
    STORABLE,
    Cursor,
    DescribedAs,
    Limit,
    NotNull,
    StorableKeys,
    StoredJson,
    changes_schema,
    pattern,
)
from stratus_db.api.problems import responses
from stratus_db.errors import NotFoundError
from stratus_db.kit.schemas import Page
from stratus_db.kit.validation import NonEmptyStr, SafeJsonObject
from stratus_db.models.user import UserRole
from stratus_db.users.credentials import CANAC
from stratus_db.users.manager import MAX_REASON_CHARS, MAX_WINDOW_DAYS, UserManager
from stratus_db.users.profile import (
    ICAO_LOCATION_INDICATOR,
    LANGUAGE_TAG,
    MAX_AIRCRAFT,
    MAX_AIRCRAFT_CHARS,
    MAX_NOTIFICATIONS,
    ExperienceLevel,
    Units,
)
from stratus_db.users.schemas import (
    EARLIEST_BIRTH_DATE,
    MAX_LICENSES,
    CredentialNumber,
    CredentialRead,
    CredentialStatus,
    Email,
    Name,
    Restrictions,
    UserRead,
)

router = APIRouter(prefix="/v1/users", tags=["users"])

Code = Annotated[str, Field(pattern=NOT_BLANK, examples=["pp", "CMA-1", "TIPO:A320"])]
"""Any spelling the ANAC catalogue (users/credentials.py) reads, which the library checks."""
Licenses = Annotated[list[Code], Field(max_length=MAX_LICENSES, examples=[["PP", "PC", "IFR"]])]
"""ANAC credential codes, read by the catalogue as a list (IFR after aeroplane licences is IFRA)."""
UserName = Annotated[Name, pattern(NOT_BLANK)]
# The library's messages about a malformed CANAC or preferences document show the value (personal data), which a
# request model's errors never do: these two are only described here, and checked by the library as before.
CanacCode = Annotated[str, pattern(f"^{CANAC.pattern}$")]
"""Also read with spaces around it."""
BirthDate = Annotated[
    date, Field(description=f"From {EARLIEST_BIRTH_DATE.isoformat()} to today (Brasília time).")
]


# The known keys of the preferences as users/profile.py checks them: only their JSON Schema is used, the library's
# check_preferences validating.
Language = Annotated[str, Field(pattern=f"^(?:{LANGUAGE_TAG.pattern})$")]
Aerodrome = Annotated[str, Field(pattern=f"^{ICAO_LOCATION_INDICATOR.pattern}$")]
"""Also read in lower case or with spaces around it, and stored upper-cased."""
Aircraft = Annotated[
    list[Annotated[str, Field(max_length=MAX_AIRCRAFT_CHARS, pattern=NOT_BLANK)]],
    Field(max_length=MAX_AIRCRAFT),
]
Notifications = Annotated[dict[str, StrictBool], StorableKeys, Field(max_length=MAX_NOTIFICATIONS)]


# extra_items (PEP 728), which pydantic reads and mypy does not yet.
@with_config(ConfigDict(json_schema_extra={"propertyNames": {"pattern": STORABLE}}))
class KnownPreferences(TypedDict, total=False, extra_items=StoredJson):  # type: ignore[call-arg]
    """The preferences document: the keys with a schema, and any other key free JSON."""

    language: Language
    units: Units
    home_aerodrome: Aerodrome
    aircraft: Aircraft
    notifications: Notifications


@with_config(ConfigDict(json_schema_extra={"propertyNames": {"pattern": STORABLE}}))
class PreferencesPatch(TypedDict, total=False, extra_items=StoredJson):  # type: ignore[call-arg]
    """A JSON merge patch (RFC 7396) of the preferences: null removes a key, an object merges into the one held. The
    document it makes is then checked as a whole (the number of notifications, say)."""

    language: Language | None
    units: Units | None
    home_aerodrome: Aerodrome | None
    aircraft: Aircraft | None
    notifications: Annotated[dict[str, StrictBool | None], StorableKeys] | None


UserPreferences = Annotated[SafeJsonObject, DescribedAs(KnownPreferences)]


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: UserName
    email: Email
    role: UserRole
    licenses: Licenses = Field(default_factory=list)
    experience_level: ExperienceLevel | None = None
    """Left out, derived from the licences."""
    preferences: UserPreferences = Field(default_factory=dict)
    birth_date: BirthDate | None = None
    canac: CanacCode | None = None


class UserChanges(BaseModel):
    """The fields to change; a field left out keeps its value (experience_level, birth_date and canac can be set to
    null to clear them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=changes_schema)

    name: Annotated[UserName | None, NotNull] = None
    email: Annotated[Email | None, NotNull] = None
    role: Annotated[UserRole | None, NotNull] = None
    licenses: Annotated[Licenses | None, NotNull] = None
    experience_level: ExperienceLevel | None = None
    preferences: Annotated[UserPreferences | None, NotNull] = None
    birth_date: BirthDate | None = None
    canac: CanacCode | None = None


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
    role: UserRole | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[UserRead]:
    return await UserManager(db).list_users(role=role, limit=limit, cursor=cursor, principal=caller)


class Deactivation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[NonEmptyStr, StringConstraints(max_length=MAX_REASON_CHARS), pattern(NOT_BLANK)]


CredentialNumberText = Annotated[CredentialNumber, pattern(NOT_BLANK)]
RestrictionsText = Annotated[Restrictions, pattern(NOT_BLANK)]


class NewCredential(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    code: Code
    """Any spelling the ANAC catalogue reads."""
    number: CredentialNumberText | None = None
    issued_at: date | None = None
    expires_at: date | None = None
    """Not before issued_at."""
    restrictions: RestrictionsText | None = None


class CredentialChanges(BaseModel):
    """The fields to change; a field left out keeps its value, null clears it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=changes_schema)

    number: CredentialNumberText | None = None
    issued_at: date | None = None
    expires_at: date | None = None
    restrictions: RestrictionsText | None = None


@router.patch("/{user_id}/preferences", response_model=UserRead, responses=responses(403, 404))
async def update_preferences(
    user_id: uuid.UUID,
    patch: Annotated[SafeJsonObject, DescribedAs(PreferencesPatch), Body()],
    caller: Caller,
    db: Db,
) -> UserRead:
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
    within_days: int = Query(ge=0, le=MAX_WINDOW_DAYS),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CredentialRead]:
    """Credentials of every user expiring within `within_days` (administrators)."""
    return await UserManager(db).expiring_credentials(
        within_days, limit=limit, cursor=cursor, principal=caller
    )
