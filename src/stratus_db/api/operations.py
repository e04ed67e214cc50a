"""The routes anyone may call: is the process alive, is it ready to serve."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from stratus_db.api.context import Db
from stratus_db.api.problems import RETRY_AFTER_S
from stratus_db.kit.samples import SampleKind
from stratus_db.memory.cache import MemoryCache

router = APIRouter(tags=["operations"])


class Alive(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    """Whether the service can serve: its database reachable and at the code's schema revision, and the memory
    cache hearing other instances' invalidations. No more: the endpoint is public, and the details (server,
    revision, pool, cache) are for operators (`stratus-db health`, /metrics)."""

    healthy: bool


@router.get("/health", response_model=Alive, summary="The process is alive (no database call)")
async def health() -> Alive:
    return Alive()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "The database is unreachable or behind the code, or the cache deaf to invalidations",
        }
    },
    summary="The database is reachable, its schema at the code's revision, and the cache's LISTEN connection up",
)
async def ready(db: Db, response: Response) -> Readiness:
    report = await db.health_check()
    error = report.error
    if report.healthy and not await MemoryCache.of(db).ready():
        error = (
            "the memory cache does not hear other instances' invalidations (its LISTEN connection is down)"
        )
    db.samples.count(SampleKind.probe, "/ready", failed=error is not None)  # availability (docs/metrics.md)
    if error is not None:
        db.log.warning("not ready", error=error)
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return Readiness(healthy=error is None)
