"""/v1/audit: the trail, its report and its verification (auditors and administrators, as the library decides)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from stratus_db.api.context import Caller, Db
from stratus_db.api.problems import responses
from stratus_db.audit.manager import AuditManager
from stratus_db.audit.report import AuditReport
from stratus_db.audit.schemas import AuditEvent
from stratus_db.kit.schemas import Page

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class ExpectedHeads(BaseModel):
    expected_heads: list[dict[str, Any]] = []
    """Checkpoints exported earlier (`stratus-db audit checkpoint --export`), kept outside the database."""


class VerifyProblem(BaseModel):
    kind: str
    position: int | None
    audit_id: uuid.UUID | None
    detail: str


class Verification(BaseModel):
    ok: bool
    rows_checked: int
    checkpoints_checked: int
    unsealed: int
    redacted: int
    problems: list[VerifyProblem]


class CheckpointHead(BaseModel):
    checkpoint_id: int
    sealed_at: datetime
    first_position: int
    last_position: int
    head: str
    purged_at: datetime | None


@router.get("", response_model=Page[AuditEvent], responses=responses(403))
async def query(
    caller: Caller,
    db: Db,
    user_id: uuid.UUID | None = None,
    record_id: uuid.UUID | None = None,
    table: str | None = Query(None, max_length=63),
    action: str | None = Query(None, max_length=63),
    actor: str | None = Query(None, max_length=210),
    trace_id: str | None = Query(None, max_length=64),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=500),
    cursor: str | None = Query(None, max_length=500),
) -> Page[AuditEvent]:
    """Audit rows, newest first; `since` and `until` are instants with a time zone."""
    return await AuditManager(db).query(
        user_id=user_id,
        record_id=record_id,
        table=table,
        action=action,
        actor=actor,
        trace_id=trace_id,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
        principal=caller,
    )


@router.get("/report", response_model=AuditReport, responses=responses(403))
async def report(caller: Caller, db: Db, since: datetime, until: datetime) -> AuditReport:
    return await AuditManager(db).report(since, until, principal=caller)


@router.post("/verify", response_model=Verification, responses=responses(403))
async def verify(body: ExpectedHeads, caller: Caller, db: Db) -> Verification:
    """Recompute the trail against its seals (and the heads given): `ok`, and the problems in chain order."""
    found = await AuditManager(db).verify(expected_heads=body.expected_heads, principal=caller)
    return Verification.model_validate(found, from_attributes=True)


@router.get("/checkpoints", response_model=list[CheckpointHead], responses=responses(403))
async def checkpoints(caller: Caller, db: Db) -> list[CheckpointHead]:
    """Every checkpoint, oldest first: the heads to keep outside the database."""
    return [
        CheckpointHead.model_validate(checkpoint, from_attributes=True)
        for checkpoint in await AuditManager(db).checkpoints(principal=caller)
    ]
