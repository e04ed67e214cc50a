"""One error shape for every failure: RFC 9457 problem details (`application/problem+json`), with the trace id.

A StratusError becomes its status (below); a request FastAPI could not validate, 422; anything else, 500 with no
detail (the log has it, under the same trace id): no stack trace or SQL ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from stratus_db.api.auth import UnauthenticatedError
from stratus_db.errors import (
    ConflictError,
    ConsentRequiredError,
    DatabaseClosedError,
    DatabaseUnavailableError,
    NotFoundError,
    PermissionDeniedError,
    StratusError,
    ValidationError,
)

MEDIA_TYPE = "application/problem+json"
TRACE_HEADER = "x-request-id"
RETRY_AFTER_S = 5
"""What a 503 asks the client to wait: the library reconnects by itself meanwhile."""


STATUSES: tuple[tuple[type[StratusError], int, str], ...] = (
    (UnauthenticatedError, 401, "Unauthenticated"),
    (PermissionDeniedError, 403, "Forbidden"),
    (ConsentRequiredError, 403, "Consent required"),
    (NotFoundError, 404, "Not found"),
    (ConflictError, 409, "Conflict"),
    (ValidationError, 422, "Invalid request"),
    (DatabaseUnavailableError, 503, "Database unavailable"),
    (DatabaseClosedError, 503, "Service shutting down"),
)
"""Each StratusError subclass's status and title, the first that matches winning (a subclass before its base)."""

_log = logging.getLogger("stratus_db.api")


def problem(request: Request, status: int, title: str, detail: str | None, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "trace_id": request.state.trace_id}
    if detail is not None:
        body["detail"] = detail
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body | extra, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def status_of(error: StratusError) -> tuple[int, str]:
    for kind, status, title in STATUSES:
        if isinstance(error, kind):
            return status, title
    return 500, "Internal error"


async def _stratus_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StratusError)
    status, title = status_of(error)
    if status == 500:
        _log.error("request failed", exc_info=error, extra={"trace_id": request.state.trace_id})
        return problem(request, status, title, None)
    if status == 503:
        # The library's message names the server and the database: the log keeps it, the client gets less.
        _log.warning("request refused: %s", error.message, extra={"trace_id": request.state.trace_id})
        return problem(request, status, title, "the database cannot be reached just now: retry shortly")
    return problem(request, status, title, error.message)


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    # Where and what, never the value sent back (it may be personal data).
    problems = [
        {"location": [str(part) for part in item.get("loc", ())], "message": item.get("msg", "")}
        for item in error.errors()
    ]
    return problem(request, 422, "Invalid request", "the request does not match the API", errors=problems)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    answer = problem(request, error.status_code, str(error.detail), None)
    answer.headers.update(error.headers or {})  # a 405's Allow
    return answer


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    _log.error("request failed unexpectedly", exc_info=error, extra={"trace_id": request.state.trace_id})
    answer = problem(request, 500, "Internal error", None)
    # Answered outside RequestTrace (Starlette's last resort runs outermost): the trace id goes on here.
    answer.headers[TRACE_HEADER] = request.state.trace_id
    return answer


def install(app: FastAPI) -> None:
    app.add_exception_handler(StratusError, _stratus_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


class Problem(BaseModel):
    """RFC 9457 problem details, as every failure is answered."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    trace_id: str
    errors: list[dict[str, Any]] | None = None


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI description of the failures a route may answer: those of every authenticated route (400 for a
    body that is not JSON, 401, 413, 422, 500, 503) and `statuses`."""
    titles = {status: title for _kind, status, title in STATUSES} | {
        400: "Malformed request",
        413: "Request too large",
        500: "Internal error",
    }
    return {
        status: {"model": Problem, "description": titles[status]}
        for status in sorted({400, 401, 413, 422, 500, 503, *statuses})
    }
