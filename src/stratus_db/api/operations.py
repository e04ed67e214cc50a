"""The routes anyone may call: is the process alive, is it ready to serve."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from stratus_db.api.context import Db
from stratus_db.database import HealthStatus

router = APIRouter(tags=["operations"])


class Alive(BaseModel):
    status: str = "ok"


@router.get("/health", response_model=Alive, summary="The process is alive (no database call)")
async def health() -> Alive:
    return Alive()


@router.get(
    "/ready",
    response_model=HealthStatus,
    responses={503: {"model": HealthStatus, "description": "The database is unreachable or behind the code"}},
    summary="The database is reachable and its schema at the code's revision",
)
async def ready(db: Db, response: Response) -> HealthStatus:
    report = await db.health_check()
    if not report.healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = "5"
    return report
