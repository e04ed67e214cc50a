from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Enum, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import JSONType, UTCDateTime


class UserRole(StrEnum):
    pilot = "pilot"
    instructor = "instructor"
    mechanic = "mechanic"
    student = "student"
    dispatcher = "dispatcher"
    flight_attendant = "flight_attendant"
    air_traffic_controller = "air_traffic_controller"
    other = "other"


class UserRow(Base):
    __tablename__ = "users"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # name, email, birth_date and canac hold tokens: encrypted under the user's data key (security/personal.py),
    # bound to their column and row. Lookups and uniqueness go through the blind indexes.
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text)
    # HMAC of the lower-cased e-mail (crypto.BlindIndex.email): addresses are unique whatever their case. A
    # tombstone's is `erased:` and a pseudonym (privacy/erasure.py).
    email_index: Mapped[str] = mapped_column(String(80))
    # The user's data key, wrapped by the keyring (crypto.FieldCipher.new_data_key); NULL once destroyed by an
    # erasure that keeps a tombstone. Deleting the row destroys it: crypto-shredding.
    data_key: Mapped[str | None] = mapped_column(Text)
    role: Mapped[UserRole] = mapped_column(
        Enum(
            UserRole,
            native_enum=False,
            create_constraint=True,
            length=32,
            name="user_role",
            validate_strings=True,
        )
    )
    licenses: Mapped[list[str]] = mapped_column(JSONType)
    experience_level: Mapped[str | None] = mapped_column(String(50))
    preferences: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_active: Mapped[datetime] = mapped_column(UTCDateTime)
    # Known or not: the validity of a medical certificate (CMA) follows from the holder's age (docs/users.md).
    birth_date: Mapped[str | None] = mapped_column(Text)
    # The person's ANAC code (6 digits, users/credentials.validate_canac), and its blind index for uniqueness.
    canac: Mapped[str | None] = mapped_column(Text)
    canac_index: Mapped[str | None] = mapped_column(String(64))
    # Set by deactivate_user, cleared by reactivate_user; list_users and active_users leave such users out.
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # list_users(role=...) pages through one role in key order.
        Index(None, "role", "user_id"),
        # list_users(experience_level=...) pages through one level in key order, as the role filter does.
        Index(None, "experience_level", "user_id"),
        # list_users(active_since=...) and active_users(since): a range of recent users when few are recent.
        Index(None, "last_active"),
        # A CANAC belongs to one person. NULLs are distinct in a unique index on both backends, so any number of
        # users may have none.
        Index(None, "canac_index", unique=True),
        # An e-mail belongs to one user: its blind index is unique (get_user_by_email reads through it).
        Index(None, "email_index", unique=True),
    )
