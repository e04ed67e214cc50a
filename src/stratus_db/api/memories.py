"""/v1/users/{user_id}/memories: what the agents remember about a user."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel

from stratus_db.api.context import Caller, Db
from stratus_db.api.problems import responses
from stratus_db.errors import NotFoundError
from stratus_db.kit.schemas import Page
from stratus_db.memory.manager import MemoryManager
from stratus_db.memory.schemas import MemoryEntry, SearchResult

router = APIRouter(prefix="/v1/users/{user_id}/memories", tags=["memories"])
search_router = APIRouter(prefix="/v1/users/{user_id}", tags=["memories"])
"""Search apart from /memories/{key}: a memory may be named `search`."""
Key = Path(min_length=1, max_length=200, description="The memory's key, compared exactly.")


class MemoryValue(BaseModel):
    value: Any
    memory_type: str | None = None
    importance_score: float | None = None
    ttl_seconds: float | None = None
    expires_at: datetime | None = None
    sensitive: bool = False


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
    user_id: uuid.UUID, body: MemoryValue, caller: Caller, db: Db, key: str = Key
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
async def get_memory(user_id: uuid.UUID, caller: Caller, db: Db, key: str = Key) -> MemoryEntry:
    memory = await MemoryManager(db).get_memory(user_id, key, principal=caller)
    if memory is None:
        raise NotFoundError(f"user {user_id} has no memory {key!r}")
    return memory


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, responses=responses(403, 404))
async def delete_memory(user_id: uuid.UUID, caller: Caller, db: Db, key: str = Key) -> Response:
    if not await MemoryManager(db).delete_memory(user_id, key, principal=caller):
        raise NotFoundError(f"user {user_id} has no memory {key!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("", response_model=Page[MemoryEntry], responses=responses(403))
async def list_memories(
    user_id: uuid.UUID,
    caller: Caller,
    db: Db,
    memory_type: str | None = Query(None, max_length=50),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=500),
) -> Page[MemoryEntry]:
    return await MemoryManager(db).list_memories(
        user_id, memory_type, limit=limit, cursor=cursor, principal=caller
    )
