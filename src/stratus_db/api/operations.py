"""The routes anyone may call: is the process alive, is it ready to serve."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from stratus_db.api.context import Db
from stratus_db.api.problems import RETRY_AFTER_S

router = APIRouter(tags=["operations"])


class Alive(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    """Whether the service can serve: its database reachable and at the code's schema revision. No more: the
    endpoint is public, and the details (server, revision, pool) are for operators (`stratus-db health`)."""

    healthy: bool


@router.get("/health", response_model=Alive, summary="The process is alive (no database call)")
async def health() -> Alive:
    return Alive()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "The database is unreachable or behind the code"}},
    summary="The database is reachable and its schema at the code's revision",
)
async def ready(db: Db, response: Response) -> Readiness:
    report = await db.health_check()
    if not report.healthy:
        db.log.warning("not ready", error=report.error)
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return Readiness(healthy=report.healthy)
