"""/v1/users/{user_id}/memories: what the agents remember about a user."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool

from stratus_db.api.context import Caller, Db
from stratus_db.api.fields import STORABLE, Cursor, DescribedAs, Limit, StoredJson
from stratus_db.api.problems import responses
from stratus_db.errors import NotFoundError
from stratus_db.kit.schemas import Page
from stratus_db.kit.validation import SafeJson
from stratus_db.memory.manager import MemoryManager
from stratus_db.memory.schemas import MAX_TTL, Importance, MemoryEntry, MemoryKey, SearchResult
from stratus_db.models.memory import MemoryType

router = APIRouter(prefix="/v1/users/{user_id}/memories", tags=["memories"])
search_router = APIRouter(prefix="/v1/users/{user_id}", tags=["memories"])
"""Search apart from /memories/{key}: a memory may be named `search`."""
Key = Annotated[
    MemoryKey,
    Path(description="The memory's key, compared exactly.", json_schema_extra={"pattern": STORABLE}),
]

MIN_TTL_SECONDS = timedelta.resolution.total_seconds()
"""The library keeps lifetimes to the microsecond, and refuses one that rounds to none."""
Seconds = Annotated[float, Field(ge=MIN_TTL_SECONDS, le=MAX_TTL.total_seconds(), allow_inf_nan=False)]


class MemoryValue(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    value: Annotated[SafeJson, DescribedAs(StoredJson)]
    memory_type: MemoryType | None = None
    importance_score: Importance | None = None
    ttl_seconds: Seconds | None = None
    """Overrides the tier's lifetime; not with expires_at, nor for a critical memory."""
    expires_at: AwareDatetime | None = None
    """An instant in the future; not with ttl_seconds, nor for a critical memory."""
    sensitive: StrictBool = False


@search_router.get("/memory-search", response_model=list[SearchResult], responses=responses(403))
async def search_memories(
    user_id: uuid.UUID,
    caller: Caller,
    db: Db,
    q: str = Query(min_length=1, max_length=1000, description="What to look for, in plain words."),
    limit: int = Query(10, ge=1, le=100),
) -> list[SearchResult]:
    return await MemoryManager(db).search_memories(user_id, q, limit, principal=caller)


@router.put("/{key}", response_model=MemoryEntry, responses=responses(403, 404))
async def store_memory(
    user_id: uuid.UUID, key: Key, body: MemoryValue, caller: Caller, db: Db
) -> MemoryEntry:
    return await MemoryManager(db).store_memory(
        user_id,
        key,
        body.value,
        body.memory_type,
        body.importance_score,
        ttl=body.ttl_seconds,
        expires_at=body.expires_at,
        sensitive=body.sensitive,
        principal=caller,
    )


@router.get("/{key}", response_model=MemoryEntry, responses=responses(403, 404))
async def get_memory(user_id: uuid.UUID, key: Key, caller: Caller, db: Db) -> MemoryEntry:
    memory = await MemoryManager(db).get_memory(user_id, key, principal=caller)
    if memory is None:
        raise NotFoundError(f"user {user_id} has no memory {key!r}")
    return memory


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(403, 404))
async def delete_memory(user_id: uuid.UUID, key: Key, caller: Caller, db: Db) -> Response:
    if not await MemoryManager(db).delete_memory(user_id, key, principal=caller):
        raise NotFoundError(f"user {user_id} has no memory {key!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("", response_model=Page[MemoryEntry], responses=responses(403))
async def list_memories(
    user_id: uuid.UUID,
    caller: Caller,
    db: Db,
    memory_type: MemoryType | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[MemoryEntry]:
    return await MemoryManager(db).list_memories(
        user_id, memory_type, limit=limit, cursor=cursor, principal=caller
    )
