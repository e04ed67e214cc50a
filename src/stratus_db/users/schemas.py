from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    EmailStr,
    Field,
    Strict,
    StrictStr,
    StringConstraints,
    model_validator,
)

from stratus_db.errors import ValidationError
from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.validation import InputModel, NonEmptyStr, SafeJsonObject, TextEnum
from stratus_db.models.credential import ExpiryBasis
from stratus_db.models.user import UserRole
from stratus_db.users.credentials import CredentialKind, canonical_code, licence_codes, validate_canac
from stratus_db.users.profile import ExperienceLevel, check_preferences

MAX_LICENSES = 50


def _lower(value: str) -> str:
    return value.lower()


Email = Annotated[EmailStr, Strict(), StringConstraints(max_length=320), AfterValidator(_lower)]
"""An e-mail address, stored lower-cased: addresses are unique whatever their case."""


def _catalogue_codes(codes: list[str]) -> list[str]:
    try:
        return licence_codes(codes, "entry")
    except ValidationError as exc:
        raise ValueError(exc.message) from None


Licenses = Annotated[list[StrictStr], Field(max_length=MAX_LICENSES), AfterValidator(_catalogue_codes)]
"""ANAC credential codes, read by the catalogue (users/credentials.py licence_codes): canonical, in order, without
duplicates (``["pp", "PC", "IFR"]`` → ``["PPR", "PCM", "IFRA"]``). Each becomes a credential of the user's."""
Name = Annotated[NonEmptyStr, StringConstraints(max_length=200)]
Level = TextEnum[ExperienceLevel]
"""An experience level from the documented set (users/profile.py), or its value as text."""
Preferences = Annotated[SafeJsonObject, AfterValidator(check_preferences)]
"""A preferences document: known keys checked (users/profile.py), free keys within the JSON limits."""

EARLIEST_BIRTH_DATE = date(1900, 1, 1)
"""No user was born before this day: an earlier date is a typing mistake. (The latest is today: UserManager checks
it against its clock.)"""


def _plain_date(value: object) -> object:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise ValueError(f"must be a datetime.date (not a datetime, not text), got {type(value).__name__}")
    return value


def _not_before_1900(value: date) -> date:
    if value < EARLIEST_BIRTH_DATE:
        raise ValueError(f"must be on or after {EARLIEST_BIRTH_DATE.isoformat()}, got {value.isoformat()}")
    return value


def _canac(value: object) -> str:
    try:
        return validate_canac(value)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ValueError(exc.message.removeprefix("canac ")) from None


BirthDate = Annotated[date, BeforeValidator(_plain_date), AfterValidator(_not_before_1900)]
"""A `datetime.date` from 1900-01-01 on (UserManager also refuses one after today)."""
Canac = Annotated[str, BeforeValidator(_canac)]
"""The person's ANAC code (CANAC): 6 digits as text, stripped (users/credentials.validate_canac)."""


class UserCreate(InputModel):
    name: Name
    email: Email
    role: TextEnum[UserRole]
    licenses: Licenses = Field(default_factory=list)
    experience_level: Level | None = None
    preferences: Preferences = Field(default_factory=dict)
    birth_date: BirthDate | None = None
    canac: Canac | None = None


class EmailLookup(InputModel):
    email: Email


class UserUpdate(InputModel):
    """Fields to change; a field left out keeps its value. experience_level, birth_date and canac can be cleared (set
    to None)."""

    fixed_fields: ClassVar[Mapping[str, str]] = {
        "user_id": "it is the user's identity",
        "created_at": "it records when the user was registered",
        "updated_at": "every change sets it",
        "last_active": "it follows the user's activity",
        "deactivated_at": "deactivate_user and reactivate_user set it",
    }

    name: Name | None = None
    email: Email | None = None
    role: TextEnum[UserRole] | None = None
    licenses: Licenses | None = None
    experience_level: Level | None = None
    preferences: Preferences | None = None
    birth_date: BirthDate | None = None
    canac: Canac | None = None

    @model_validator(mode="after")
    def _required_fields_stay_set(self) -> UserUpdate:
        cleared = [
            name
            for name in ("name", "email", "role", "licenses", "preferences")
            if name in self.model_fields_set and getattr(self, name) is None
        ]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be removed, only changed")
        return self


class UserRead(FrozenModel):
    user_id: uuid.UUID
    name: str
    email: str
    role: UserRole
    licenses: list[str]
    experience_level: str | None
    preferences: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    last_active: datetime
    birth_date: date | None
    canac: str | None
    deactivated_at: datetime | None
    """When deactivate_user deactivated the user; None while active."""


# --- Structured credentials ---------------------------------------------------------------------------------------


def _canonical(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {type(value).__name__}")
    try:
        return canonical_code(value)
    except ValidationError as exc:
        raise ValueError(exc.message.removeprefix("code ")) from None


CredentialDate = Annotated[date, BeforeValidator(_plain_date)]
CredentialCode = Annotated[str, BeforeValidator(_canonical)]
CredentialNumber = Annotated[NonEmptyStr, StringConstraints(max_length=50)]
Restrictions = Annotated[NonEmptyStr, StringConstraints(max_length=1000)]


class _Dates(InputModel):
    issued_at: CredentialDate | None = None
    expires_at: CredentialDate | None = None

    @model_validator(mode="after")
    def _expiry_not_before_issue(self) -> _Dates:
        if self.issued_at is not None and self.expires_at is not None and self.expires_at < self.issued_at:
            raise ValueError(
                f"expires_at {self.expires_at.isoformat()} is before issued_at {self.issued_at.isoformat()}"
            )
        return self


class CredentialAdd(_Dates):
    user_id: uuid.UUID
    code: CredentialCode
    number: CredentialNumber | None = None
    restrictions: Restrictions | None = None


class CredentialUpdate(InputModel):
    """Fields to change; a field left out keeps its value, None clears it. The code is not changed: remove the
    credential and add the other one."""

    fixed_fields: ClassVar[Mapping[str, str]] = {
        "credential_id": "it is the credential's identity",
        "user_id": "a credential stays with its holder",
        "code": "remove the credential and add one with the other code",
        "kind": "it follows from the code",
        "expiry_basis": "it says whether expires_at was given or computed",
        "created_at": "it records when the credential was added",
        "updated_at": "every change sets it",
    }

    number: CredentialNumber | None = None
    issued_at: CredentialDate | None = None
    expires_at: CredentialDate | None = None
    restrictions: Restrictions | None = None


class CredentialRead(FrozenModel):
    credential_id: uuid.UUID
    user_id: uuid.UUID
    code: str
    kind: CredentialKind
    number: str | None
    issued_at: date | None
    expires_at: date | None
    expiry_basis: ExpiryBasis | None
    """`recorded` (given by the caller) or `computed` (a medical certificate's, from the holder's birth date); None
    without an expiry."""
    restrictions: str | None
    created_at: datetime
    updated_at: datetime


class CredentialState(StrEnum):
    valid = "valid"
    expiring = "expiring"
    expired = "expired"
    no_expiry = "no expiry"


class CredentialStatus(FrozenModel):
    """One credential and its state on a day (credential_status)."""

    credential: CredentialRead
    status: CredentialState
    reason: str
    days_left: int | None
    """Days from the day asked about to expires_at (negative once expired); None without an expiry."""
