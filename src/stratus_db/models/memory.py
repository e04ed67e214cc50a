from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import JSONType, UTCDateTime


class MemoryType(StrEnum):
    short_term = "short_term"
    medium_term = "medium_term"
    long_term = "long_term"
    critical = "critical"


class MemoryRow(Base):
    __tablename__ = "memory_entries"

    memory_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    memory_type: Mapped[MemoryType] = mapped_column(
        Enum(
            MemoryType,
            native_enum=False,
            create_constraint=True,
            length=16,
            name="memory_type",
            validate_strings=True,
        )
    )
    key: Mapped[str] = mapped_column(String(200))
    value: Mapped[Any] = mapped_column(JSONType)
    importance_score: Mapped[float] = mapped_column(Float)
    access_count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_accessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # store_memory(sensitive=True): `value` holds a token (a JSON string) under the user's data key, and
    # search_text is empty, so the memory is left out of search (docs/memory.md).
    sensitive: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The folded words of key and value (kit/text.py), written by store_memory. The full-text structures built on
    # it differ by backend and live outside the models (see memory/search.py and migration 0002).
    search_text: Mapped[str] = mapped_column(Text, server_default="")

    __table_args__ = (
        # One row per key per user; get_memory and list_memories (key order) both read through it.
        UniqueConstraint("user_id", "key"),
        CheckConstraint(
            "importance_score >= 0 AND importance_score <= 1", name="importance_in_unit_interval"
        ),
        CheckConstraint("access_count >= 0", name="access_count_non_negative"),
        # purge_expired: the oldest expired memories of all users, in bounded batches.
        Index(None, "expires_at"),
    )
