"""LGPD: a user's export, their erasure, and their consents."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from stratus_db.api.context import Caller, Db
from stratus_db.api.fields import NOT_BLANK, Cursor, Limit, pattern
from stratus_db.api.problems import responses
from stratus_db.kit.schemas import Page
from stratus_db.models.consent import ConsentPurpose
from stratus_db.privacy.consent import ConsentManager
from stratus_db.privacy.consent_schemas import CHANNEL, Channel, ConsentEvent, ConsentState, TextVersion
from stratus_db.privacy.manager import ErasureReason, PrivacyManager

router = APIRouter(prefix="/v1/users/{user_id}", tags=["privacy (LGPD)"])


def _reason_not_blank(schema: dict[str, Any]) -> None:
    schema["properties"]["reason"]["pattern"] = NOT_BLANK


# The library's own model of it (privacy/manager.py), and so its limits; it refuses a reason of blanks.
class Erasure(ErasureReason):
    """Why (the request's protocol, the legal basis): kept in the erasure's audit row."""

    model_config = ConfigDict(json_schema_extra=_reason_not_blank)


class Erased(BaseModel):
    pseudonym: uuid.UUID
    deleted: dict[str, int]
    audit_rows_pseudonymised: int
    held: list[str]


ChannelName = Annotated[Channel, pattern(f"^{CHANNEL.pattern}$")]
"""Also read in upper case or with spaces around it, and stored as here."""
Version = Annotated[TextVersion, pattern(NOT_BLANK)]


class ConsentGiven(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_version: Version
    channel: ChannelName


class ConsentWithdrawn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: ChannelName
    text_version: Version | None = None


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
    purpose: ConsentPurpose | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
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
    user_id: uuid.UUID, purpose: ConsentPurpose, body: ConsentGiven, caller: Caller, db: Db
) -> ConsentEvent:
    return await ConsentManager(db).grant_consent(
        user_id, purpose, body.text_version, body.channel, principal=caller
    )


@router.delete("/consents/{purpose}", response_model=ConsentEvent, responses=responses(403, 404))
async def revoke_consent(
    user_id: uuid.UUID, purpose: ConsentPurpose, caller: Caller, db: Db, body: ConsentWithdrawn | None = None
) -> ConsentEvent:
    withdrawn = body or ConsentWithdrawn(channel="api")
    return await ConsentManager(db).revoke_consent(
        user_id, purpose, withdrawn.channel, text_version=withdrawn.text_version, principal=caller
    )
