"""/metrics: the service's requests (counts and latency by route and status), the library's operations, and the pool
and cache figures of `db.metrics()`, in the Prometheus text format (prometheus-client)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus_db.analytics import AnalyticsManager
from stratus_db.analytics.schemas import CurrentFigures
from stratus_db.api.auth import authenticate, bearer_scheme
from stratus_db.api.context import Db
from stratus_db.api.problems import responses
from stratus_db.errors import PermissionDeniedError, StratusError
from stratus_db.kit.metrics import DURATION_BUCKETS_S
from stratus_db.kit.samples import SampleKind
from stratus_db.security.principal import Principal, PrincipalKind

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""A request's method as a label; any other (a client may send any token) counts as OTHER: labels stay few."""
UNMATCHED = "unmatched"
"""The route label of a request no route took (a 404 for an unknown path): one label, whatever the path."""


UNSAMPLED_ROUTES = frozenset({"/health", "/ready", "/metrics"})
"""Not requests of the service's users: probes (counted as such by /ready) and scrapes."""


class HttpMetrics:
    """The service's own registry: requests by method, route template and status, and their durations."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stratus_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "stratus_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route",
            ["method", "route"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )


class RequestMetrics:
    """Count and time every request (by its route's template, never its raw path), and log one line for it."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(method, route).observe(seconds)
            db: StratusPostgreSQLIntegration = scope["app"].state.db
            if route not in UNSAMPLED_ROUTES:  # the request availability of docs/metrics.md
                db.samples.count(SampleKind.http, route, failed=status >= 500)
            db.log.info(
                f"{method} {route} {status}",
                method=method,
                route=route,
                status=status,
                duration_ms=seconds * 1000,
            )


class _DatabaseFigures:
    """The pool's and the caches' figures of `db.metrics()` as gauges, read when scraped."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        figures = self.db.metrics()
        for group, values in figures.items():
            if group in ("backend", "operations") or not isinstance(values, dict):
                continue
            for name, value in values.items():
                if isinstance(value, bool | int | float):
                    gauge = GaugeMetricFamily(
                        f"stratus_db_{group}_{name}", f"db.metrics()['{group}']['{name}']"
                    )
                    gauge.add_metric([], float(value))
                    yield gauge


METRICS_READERS = frozenset({PrincipalKind.admin, PrincipalKind.auditor, PrincipalKind.system})


async def metrics_reader(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal | None:
    """Who may scrape: anyone when STRATUS_API_PUBLIC_METRICS, else an operator's token (admin, auditor, system)."""
    if request.app.state.db.settings.STRATUS_API_PUBLIC_METRICS:
        return None
    principal = await authenticate(request, credentials)
    if principal.kind not in METRICS_READERS:
        raise PermissionDeniedError("the metrics are for operators: an admin, auditor or system token")
    return principal


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses=responses(401, 403)
    | {200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics: requests, database operations, pool and caches",
)
async def metrics(
    request: Request, db: Db, _reader: Annotated[Principal | None, Depends(metrics_reader)]
) -> Response:
    http: HttpMetrics = request.app.state.http_metrics
    figures = CollectorRegistry()
    figures.register(_DatabaseFigures(db))
    # The route decided who may scrape; the figures are read as the service itself. With the database down, the
    # process's own figures still answer.
    with contextlib.suppress(StratusError):
        figures.register(_CurrentFigures(await AnalyticsManager(db).current(principal=SCRAPER)))
    body = generate_latest(http.registry) + db.metrics_exposition() + generate_latest(figures)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


SCRAPER = Principal.system("metrics")


class _CurrentFigures:
    """docs/metrics.md's figures of now, across every instance: today's active users, the last hour's error rate
    and availability (absent while there is nothing to divide)."""

    def __init__(self, current: CurrentFigures) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "stratus_active_users_today",
            "Users who wrote today, in STRATUS_METRICS_TIME_ZONE (all instances)",
        )
        active.add_metric([], self.current.active_users_today)
        yield active
        if self.current.error_rate is not None:
            errors = GaugeMetricFamily(
                "stratus_error_rate",
                "Failed calls / calls of every operation over the last hour (all instances)",
            )
            errors.add_metric([], self.current.error_rate)
            yield errors
        availability = GaugeMetricFamily(
            "stratus_availability",
            "Ready probes / probes, or non-5xx requests / requests, over the last hour (all instances)",
            labels=["source"],
        )
        for source, value in (
            ("probes", self.current.probe_availability),
            ("requests", self.current.request_availability),
        ):
            if value is not None:
                availability.add_metric([source], value)
        yield availability
