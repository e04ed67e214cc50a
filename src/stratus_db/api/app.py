"""The FastAPI application: middleware, error handlers and routes around one database handle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from stratus_db import tracing
from stratus_db.api import (
    audit,
    conversations,
    dashboard,
    memories,
    metrics,
    operations,
    privacy,
    problems,
    users,
)
from stratus_db.api.middleware import BodyLimit, RequestTrace
from stratus_db.config import Settings, load_settings
from stratus_db.database import StratusPostgreSQLIntegration

API_VERSION = "1"


def create_app(
    db: StratusPostgreSQLIntegration | None = None, *, settings: Settings | None = None
) -> FastAPI:
    """The service on `db` (which the caller keeps and closes), or on a database of its own, opened from `settings`
    (else the environment) when the application starts and closed, after the requests under way, when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if db is not None:
            yield
            return
        owned = StratusPostgreSQLIntegration(settings)
        app.state.db = owned
        owned.log.info("service started", backend=owned.backend)
        try:
            yield
        finally:
            await owned.close()
            owned.log.info("service stopped: requests finished, database closed")

    app = FastAPI(
        title="Stratus.IA database",
        version=API_VERSION,
        description="Users, memories, conversations and the audit trail of Stratus.IA, over HTTP. Every route but "
        "/health and /ready takes a bearer token (`stratus-db create-token`); failures are RFC 9457 problem "
        "details with the request's trace id.",
        lifespan=lifespan,
    )
    if db is not None:
        app.state.db = db
    settings = settings or (db.settings if db is not None else load_settings())
    limit = settings.STRATUS_API_MAX_BODY_BYTES
    app.state.http_metrics = metrics.HttpMetrics()
    app.add_middleware(BodyLimit, limit=limit)
    app.add_middleware(metrics.RequestMetrics, metrics=app.state.http_metrics)
    app.add_middleware(RequestTrace)  # outermost: every answer, a 413 included, carries the trace id
    _trace_requests(app)
    problems.install(app)
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    for router in (
        operations.router,
        metrics.router,
        users.router,
        users.credentials_router,
        memories.router,
        memories.search_router,
        conversations.router,
        conversations.stats_router,
        privacy.router,
        audit.router,
        dashboard.router,
    ):
        app.include_router(router)
    return app


UNTRACED_ROUTES = "/health,/ready,/metrics"
"""Probes and scrapes, every few seconds from each instance: spans of them would bury the requests'."""


def _trace_requests(app: FastAPI) -> None:
    """A span per request (FastAPI's OpenTelemetry instrumentation, the `otel` extra), the parent of its database
    calls' spans and the child of the caller's `traceparent`, when a tracer provider is configured (tracing.py)."""
    provider = tracing.tracer_provider()
    if provider is None or getattr(app, "_is_instrumented_by_opentelemetry", False):
        return  # no tracing, or `opentelemetry-instrument` did it when the app was made
    try:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    except ImportError:
        return
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=UNTRACED_ROUTES)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with every failure's body as it is sent: `application/problem+json` (FastAPI writes
    `application/json` for a response model)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path in document.get("paths", {}).values():
            for operation in path.values():
                for status, response in operation.get("responses", {}).items():
                    described = response.get("content", {}).get("application/json")
                    if status[0] in "45" and described == {
                        "schema": {"$ref": "#/components/schemas/Problem"}
                    }:
                        response["content"] = {problems.MEDIA_TYPE: described}
        app.openapi_schema = document
    return app.openapi_schema
