from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

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

from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.validation import InputModel, NonEmptyStr, SafeJsonObject, TextEnum
from stratus_db.models.user import UserRole
from stratus_db.users.profile import ExperienceLevel, check_preferences

MAX_LICENSES = 50


def _lower(value: str) -> str:
    return value.lower()


Email = Annotated[EmailStr, Strict(), StringConstraints(max_length=320), AfterValidator(_lower)]
"""An e-mail address, stored lower-cased: addresses are unique whatever their case."""
LicenseCode = Annotated[
    StrictStr,
    # Normalize before the pattern is checked: "pp" and " Inva " are valid spellings of PP and INVA.
    BeforeValidator(lambda value: value.strip().upper() if isinstance(value, str) else value),
    StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Z0-9][A-Z0-9/\-]*$"),
]
"""An ANAC licence or rating code such as PP, PC, PLA, IFR, MLTE, INVA, CMA-1: letters, digits, '/' and '-'."""


def _unique_in_order(codes: list[str]) -> list[str]:
    return list(dict.fromkeys(codes))


Licenses = Annotated[list[LicenseCode], Field(max_length=MAX_LICENSES), AfterValidator(_unique_in_order)]
Name = Annotated[NonEmptyStr, StringConstraints(max_length=200)]
Level = TextEnum[ExperienceLevel]
"""An experience level from the documented set (users/profile.py), or its value as text."""
Preferences = Annotated[SafeJsonObject, AfterValidator(check_preferences)]
"""A preferences document: known keys checked (users/profile.py), free keys within the JSON limits."""


class UserCreate(InputModel):
    name: Name
    email: Email
    role: TextEnum[UserRole]
    licenses: Licenses = Field(default_factory=list)
    experience_level: Level | None = None
    preferences: Preferences = Field(default_factory=dict)


class EmailLookup(InputModel):
    email: Email


class UserUpdate(InputModel):
    """Fields to change; a field left out keeps its value. Only experience_level can be cleared (set to None)."""

    name: Name | None = None
    email: Email | None = None
    role: TextEnum[UserRole] | None = None
    licenses: Licenses | None = None
    experience_level: Level | None = None
    preferences: Preferences | None = None

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
