"""What every request passes through: its trace id, and the limit on its body's size."""

from __future__ import annotations

import re
import uuid

from opentelemetry import trace
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus_db.api.problems import TRACE_HEADER
from stratus_db.context import current_context, use_context

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def trace_id_of(headers: dict[str, str]) -> str:
    """The caller's trace: W3C `traceparent`'s trace id, else a well-formed `X-Request-ID`, else the request's span's
    (when OpenTelemetry traces it: the id the tracing backend shows), else a new one."""
    parent = _TRACEPARENT.fullmatch(headers.get("traceparent", ""))
    if parent is not None and parent.group(1) != "0" * 32:
        return parent.group(1)
    given = headers.get(TRACE_HEADER, "")
    if _REQUEST_ID.fullmatch(given):
        return given
    span = trace.get_current_span().get_span_context()
    return format(span.trace_id, "032x") if span.is_valid else str(uuid.uuid4())


class RequestTrace:
    """Give each request its trace id (`scope["state"]["trace_id"]`) and echo it in `X-Request-ID`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        trace_id = trace_id_of(headers)
        scope.setdefault("state", {})["trace_id"] = trace_id

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (TRACE_HEADER.encode(), trace_id.encode())]
            await send(message)

        # The library's log lines of this request carry its trace id, from here on (the route sets the rest).
        with use_context(current_context().model_copy(update={"trace_id": trace_id})):
            await self.app(scope, receive, send_with_trace)


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413 before the route parses it: its bytes are counted as they
    arrive, whatever Content-Length claims (believed by nobody here: a small one beside chunked framing, a large one
    on a GET whose body no route reads), so that at most `limit` of them and one chunk are ever held. The refusal is
    raised from the body's reading, after routing: the problem answer, the metrics' route label and the span are the
    route's. Once the answer has begun (a streamed export listens for the client leaving meanwhile) nothing is
    refused: it could no longer be said."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        answering = False

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and not answering:
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._refusal()
            return message

        async def send_noting_the_answer(message: Message) -> None:
            nonlocal answering
            answering = answering or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, receive_within_limit, send_noting_the_answer)

    def _refusal(self) -> HTTPException:
        # FastAPI turns any other exception from reading the body into a 400; an HTTPException passes through.
        return HTTPException(413, f"the request body is over {self.limit} bytes (STRATUS_API_MAX_BODY_BYTES)")
