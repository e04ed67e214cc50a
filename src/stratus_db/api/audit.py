"""/v1/audit: the trail, its report and its verification (auditors and administrators, as the library decides)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, StrictInt, StringConstraints

from stratus_db.api.context import Caller, Db
from stratus_db.api.fields import Cursor, Limit, integral
from stratus_db.api.problems import responses
from stratus_db.audit.manager import AuditManager, AuditName
from stratus_db.audit.report import AuditReport
from stratus_db.audit.schemas import AuditEvent
from stratus_db.audit.sealing import GENESIS
from stratus_db.kit.schemas import Page

router = APIRouter(prefix="/v1/audit", tags=["audit"])

HEAD_CHARS = len(GENESIS)
"""The length of every head: the chain's first, GENESIS, is written as the others are."""


class ExportedHead(BaseModel):
    """A checkpoint as `stratus-db audit checkpoint --export` or GET /v1/audit/checkpoints gives it: its
    last_position and head are what verification compares."""

    # What else an export holds (checkpoint_id) goes through: the library names the checkpoint in its problems.
    model_config = ConfigDict(extra="allow")

    last_position: Annotated[StrictInt, BeforeValidator(integral)]
    head: Annotated[str, StringConstraints(min_length=HEAD_CHARS, max_length=HEAD_CHARS)]


class ExpectedHeads(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    expected_heads: list[ExportedHead] = []
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
    table: AuditName | None = None,
    action: AuditName | None = None,
    actor: str | None = Query(None, min_length=1, max_length=210),
    trace_id: str | None = Query(None, min_length=1, max_length=64),
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
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
async def report(caller: Caller, db: Db, since: AwareDatetime, until: AwareDatetime) -> AuditReport:
    """What the trail holds for [since, until): `until` after `since`, both instants with a time zone."""
    return await AuditManager(db).report(since, until, principal=caller)


@router.post("/verify", response_model=Verification, responses=responses(403))
async def verify(body: ExpectedHeads, caller: Caller, db: Db) -> Verification:
    """Recompute the trail against its seals (and the heads given): `ok`, and the problems in chain order."""
    heads = [head.model_dump() for head in body.expected_heads]
    found = await AuditManager(db).verify(expected_heads=heads, principal=caller)
    return Verification.model_validate(found, from_attributes=True)


@router.get("/checkpoints", response_model=list[CheckpointHead], responses=responses(403))
async def checkpoints(caller: Caller, db: Db) -> list[CheckpointHead]:
    """Every checkpoint, oldest first: the heads to keep outside the database."""
    return [
        CheckpointHead.model_validate(checkpoint, from_attributes=True)
        for checkpoint in await AuditManager(db).checkpoints(principal=caller)
    ]
