from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Enum, Index, String
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
    name: Mapped[str] = mapped_column(String(200))
    # Stored lower-cased, so the unique constraint makes addresses unique case-insensitively on both backends.
    email: Mapped[str] = mapped_column(String(320), unique=True)
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

    __table_args__ = (
        # list_users(role=...) pages through one role in key order.
        Index(None, "role", "user_id"),
    )
