"""LGPD: a user's export, their erasure, and their consents."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from stratus_db.api.context import Caller, Db
from stratus_db.api.problems import responses
from stratus_db.kit.schemas import Page
from stratus_db.privacy.consent import ConsentManager
from stratus_db.privacy.consent_schemas import ConsentEvent, ConsentState
from stratus_db.privacy.manager import PrivacyManager

router = APIRouter(prefix="/v1/users/{user_id}", tags=["privacy (LGPD)"])


class Erasure(BaseModel):
    reason: str
    """Why (the request's protocol, the legal basis): kept in the erasure's audit row."""


class Erased(BaseModel):
    pseudonym: uuid.UUID
    deleted: dict[str, int]
    audit_rows_pseudonymised: int
    held: list[str]


class ConsentGiven(BaseModel):
    text_version: str
    channel: str


class ConsentWithdrawn(BaseModel):
    channel: str
    text_version: str | None = None


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses=responses(403, 404) | {200: {"content": {"application/json": {}}, "description": "The export"}},
)
async def export_user_data(user_id: uuid.UUID, caller: Caller, db: Db) -> StreamingResponse:
    """Everything held about the user, as one JSON document (`stratus-db/user-export` version 1), streamed."""
    chunks = await PrivacyManager(db).export_user_data(user_id, principal=caller)

    async def body() -> AsyncIterator[bytes]:
        # Closed whatever happens (the client leaves mid-way): it holds a snapshot transaction's connection.
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    return StreamingResponse(
        body(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="stratus-export-{user_id}.json"'},
    )


@router.post("/erase", response_model=Erased, responses=responses(403, 404))
async def erase_user(user_id: uuid.UUID, body: Erasure, caller: Caller, db: Db) -> Erased:
    report = await PrivacyManager(db).erase_user(user_id, body.reason, principal=caller)
    return Erased(
        pseudonym=report.pseudonym,
        deleted=report.deleted,
        audit_rows_pseudonymised=report.audit_rows_pseudonymised,
        held=list(report.held),
    )


@router.get("/consents", response_model=list[ConsentState], responses=responses(403, 404))
async def consents(user_id: uuid.UUID, caller: Caller, db: Db) -> list[ConsentState]:
    return await ConsentManager(db).consents(user_id, principal=caller)


@router.get("/consents/history", response_model=Page[ConsentEvent], responses=responses(403, 404))
async def consent_history(
    user_id: uuid.UUID,
    caller: Caller,
    db: Db,
    purpose: str | None = Query(None, max_length=50),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=500),
) -> Page[ConsentEvent]:
    return await ConsentManager(db).consent_history(
        user_id, purpose=purpose, limit=limit, cursor=cursor, principal=caller
    )


@router.put(
    "/consents/{purpose}",
    status_code=status.HTTP_201_CREATED,
    response_model=ConsentEvent,
    responses=responses(403, 404),
)
async def grant_consent(
    user_id: uuid.UUID, purpose: str, body: ConsentGiven, caller: Caller, db: Db
) -> ConsentEvent:
    return await ConsentManager(db).grant_consent(
        user_id, purpose, body.text_version, body.channel, principal=caller
    )


@router.delete("/consents/{purpose}", response_model=ConsentEvent, responses=responses(403, 404))
async def revoke_consent(
    user_id: uuid.UUID, purpose: str, caller: Caller, db: Db, body: ConsentWithdrawn | None = None
) -> ConsentEvent:
    withdrawn = body or ConsentWithdrawn(channel="api")
    return await ConsentManager(db).revoke_consent(
        user_id, purpose, withdrawn.channel, text_version=withdrawn.text_version, principal=caller
    )
