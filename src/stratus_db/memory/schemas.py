from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StringConstraints

from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.validation import InputModel, SafeJson, SafeStr
from stratus_db.models.memory import MemoryType

MemoryKey = Annotated[SafeStr, StringConstraints(min_length=1, max_length=200)]
"""A memory's name within one user, e.g. "preferred_aircraft"; compared exactly (case and spaces count)."""
Importance = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class MemoryStore(InputModel):
    user_id: uuid.UUID
    key: MemoryKey
    value: SafeJson
    memory_type: MemoryType
    importance_score: Importance
    expires_at: AwareDatetime | None = None


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
