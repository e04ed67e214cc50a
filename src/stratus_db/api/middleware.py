"""What every request passes through before its route: its trace id, and the limit on its body's size."""

from __future__ import annotations

import json
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stratus_db.api.problems import MEDIA_TYPE, TRACE_HEADER
from stratus_db.context import current_context, use_context

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def trace_id_of(headers: dict[str, str]) -> str:
    """The caller's trace: W3C `traceparent`'s trace id, else a well-formed `X-Request-ID`, else a new one."""
    parent = _TRACEPARENT.fullmatch(headers.get("traceparent", ""))
    if parent is not None and parent.group(1) != "0" * 32:
        return parent.group(1)
    given = headers.get(TRACE_HEADER, "")
    return given if _REQUEST_ID.fullmatch(given) else str(uuid.uuid4())


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
    """Refuse a request body over `limit` bytes with 413, before the route parses it: at once when its Content-Length
    says so, else as its bytes arrive (at most `limit` of them held)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._detail = f"the request body is over {limit} bytes (STRATUS_API_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(scope, send)
            return
        # Read the body here whatever the headers say (a small Content-Length beside chunked framing is believed by
        # nobody but this check), holding at most `limit` bytes, and hand it on whole: a route reads it whole anyway.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(message), send)  # the client left
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(scope, send)
                return
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive), send
        )

    async def _refuse(self, scope: Scope, send: Send) -> None:
        trace_id = scope.get("state", {}).get("trace_id", "")
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request too large",
                "status": 413,
                "detail": self._detail,
                "trace_id": trace_id,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(first: Message, then: Receive | None = None) -> Receive:
    """A receive channel that gives `first`, then whatever `then` gives (a disconnect, later)."""
    given = False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return first
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive
