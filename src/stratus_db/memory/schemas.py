from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.validation import InputModel, SafeJson, SafeStr, TextEnum, Timestamp
from stratus_db.models.memory import MemoryType

MemoryKey = Annotated[SafeStr, StringConstraints(min_length=1, max_length=200)]
"""A memory's name within one user, e.g. "preferred_aircraft"; compared exactly (case and spaces count)."""
Importance = Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


MAX_TTL = timedelta(days=36_500)


def _timedelta_or_seconds(value: object) -> object:
    # Pydantic would read True as one second and "PT1H" as an hour.
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise ValueError(f"must be a timedelta or a number of seconds, got {type(value).__name__}")
    return value


Lifetime = Annotated[timedelta, BeforeValidator(_timedelta_or_seconds), Field(gt=timedelta(0), le=MAX_TTL)]


class MemoryStore(InputModel):
    user_id: uuid.UUID
    key: MemoryKey
    value: SafeJson
    memory_type: TextEnum[MemoryType] | None = None
    importance_score: Importance | None = None
    ttl: Lifetime | None = None
    """Seconds or a timedelta; overrides the tier's default lifetime."""
    expires_at: Timestamp | None = None
    sensitive: StrictBool = False

    @model_validator(mode="after")
    def _one_expiry(self) -> MemoryStore:
        if self.ttl is not None and self.expires_at is not None:
            raise ValueError("give ttl or expires_at, not both")
        if self.memory_type == MemoryType.critical and (self.ttl is not None or self.expires_at is not None):
            raise ValueError(
                "critical memories never expire: drop ttl and expires_at, or choose another memory_type"
            )
        return self


class MemoryLookup(InputModel):
    user_id: uuid.UUID
    key: MemoryKey


class MemoryEntry(FrozenModel):
    memory_id: uuid.UUID
    user_id: uuid.UUID
    memory_type: MemoryType
    key: str
    value: Any
    importance_score: float
    access_count: int
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime | None
    sensitive: bool = False
    """Stored with sensitive=True: its value is encrypted at rest and it is left out of search."""


class SearchResult(FrozenModel):
    """One memory found by search_memories, with its score and the parts the score is made of (each in [0, 1])."""

    memory: MemoryEntry
    score: float
    lexical: float
    importance: float
    recency: float
    frequency: float


class MemorySearch(InputModel):
    user_id: uuid.UUID
    query: StrictStr
    limit: Annotated[StrictInt, Field(ge=1, le=100)]
    memory_types: tuple[TextEnum[MemoryType], ...] | None = None
    min_importance: Importance | None = None
