"""OpenTelemetry spans, with the SDK's in-memory exporter: one per database call, on each backend, and one per HTTP
request above them, in the caller's trace; none of it when no tracer provider is configured."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from stratus_db import AuditManager, Database, MemoryManager, Principal, PrincipalKind, UserManager, tracing
from stratus_db.api import create_app
from stratus_db.errors import ValidationError
from tests.fixtures.http import ADMIN, CLIENT, bearer, new_user

AUDITOR = Principal(kind=PrincipalKind.auditor, id="dpo")
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This library's spans, for the test's length."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.trace_with(provider)
    try:
        yield exporter
    finally:
        tracing.trace_with(None)


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_no_provider_no_spans() -> None:
    assert tracing.tracer_provider() is None, "nothing configured the global provider in the suite"
    assert tracing.OperationSpan.start("user.get", "sqlite", True) is None


async def test_each_database_call_is_a_span(db: Database, spans: InMemorySpanExporter) -> None:
    users = UserManager(db)
    ana = await users.create_user("Ana Voo", "ana@aeroclube.com.br", "pilot", principal=ADMIN)
    await MemoryManager(db).store_memory(
        ana.user_id, "base", "SBKP", principal=Principal.for_user(ana.user_id)
    )

    [created] = named(spans, "user.create")
    assert created.kind is SpanKind.CLIENT
    assert created.attributes == {
        "db.system.name": db.backend,
        "db.operation.name": "user.create",
        "stratus.read_only": False,
    }
    assert created.status.status_code is StatusCode.UNSET
    [stored] = named(spans, "memory.store")
    assert stored.start_time is not None
    assert created.end_time is not None
    assert stored.start_time >= created.end_time


async def test_a_failed_call_is_an_error_span(db: Database, spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValidationError):
        await UserManager(db).get_user("not an id", principal=ADMIN)
    [failed] = named(spans, "user.get")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValidationError"
    [event] = failed.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith("ValidationError")


async def test_a_request_span_is_the_parent_of_its_database_calls_in_the_callers_trace(
    db: Database, spans: InMemorySpanExporter
) -> None:
    transport = httpx.ASGITransport(app=create_app(db), client=CLIENT)
    async with httpx.AsyncClient(transport=transport, base_url="http://stratus.test") as client:
        ana = await new_user(client, db)
        traced = await client.put(
            f"/v1/users/{ana}/memories/base",
            json={"value": "SBKP"},
            headers=bearer(db, Principal.for_user(ana))
            | {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert traced.status_code == 200, traced.text
        untraced = await client.get(f"/v1/users/{ana}", headers=bearer(db, Principal.for_user(ana)))
        assert untraced.status_code == 200
        assert (await client.get("/health")).status_code == 200

    assert traced.headers["x-request-id"] == CALLER_TRACE
    [request] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER and "memories" in s.name]
    assert request.name == "PUT /v1/users/{user_id}/memories/{key}"
    assert request.context is not None
    assert request.parent is not None
    assert format(request.context.trace_id, "032x") == CALLER_TRACE
    assert format(request.parent.span_id, "016x") == CALLER_SPAN
    [stored] = named(spans, "memory.store")
    assert stored.parent is not None
    assert stored.parent.span_id == request.context.span_id
    [event] = (await AuditManager(db).query(table="memory_entries", user_id=ana, principal=AUDITOR)).items
    assert event.trace_id == CALLER_TRACE, "the audit row, the log and the tracing backend show one trace"

    # Without a traceparent, the request's trace is its span's: the id the response and the audit row carry.
    [read] = named(spans, "user.get")[-1:]
    assert read.context is not None
    assert untraced.headers["x-request-id"] == format(read.context.trace_id, "032x")
    assert not [s for s in spans.get_finished_spans() if "/health" in s.name], "probes are not traced"
