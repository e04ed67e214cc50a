"""OpenTelemetry spans: one per public database call, a child of whatever span is current (an HTTP request's, under
the service), named after the operation (`memory.store`, `conversation.add_message`…).

Optional. Spans are made only once a tracer provider is configured, globally (the SDK's `set_tracer_provider`, or
`opentelemetry-instrument`) or for this library alone (`trace_with`): without one, not even the API's no-op span is
begun, as that costs a few microseconds on every call. Exporting (OTLP, Cloud Trace…) is the application's choice;
the `otel` extra installs the SDK and FastAPI's instrumentation (docs/api.md).
"""

from __future__ import annotations

import time
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

try:
    _VERSION: str | None = version("stratus-db")
except PackageNotFoundError:  # run from a source tree that was never installed
    _VERSION = None

_NO_TRACING = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)

RECHECK_S = 1.0

_chosen: TracerProvider | None = None
_global: TracerProvider | None = None
_looked_at = -RECHECK_S
_tracer: tuple[TracerProvider, Tracer] | None = None


def trace_with(provider: TracerProvider | None) -> None:
    """Send this library's spans to `provider` rather than the global one (None: back to the global provider)."""
    global _chosen
    _chosen = provider


def tracer_provider() -> TracerProvider | None:
    """The provider spans go to: `trace_with`'s, else the global one once it is configured; None: no tracing.

    OpenTelemetry sets the global provider once, for good: once found, it is kept. Until then it is looked for at
    most every RECHECK_S seconds, because looking costs close to a microsecond (an environment lookup), a tenth of a
    cached get_memory: a provider configured after calls began traces them within that delay.
    """
    global _global, _looked_at
    if _chosen is not None:
        return _chosen
    if _global is None:
        now = time.monotonic()
        if now - _looked_at >= RECHECK_S:
            _looked_at = now
            provider = trace.get_tracer_provider()
            _global = None if isinstance(provider, _NO_TRACING) else provider
    return _global


def _active_tracer() -> Tracer | None:
    global _tracer
    provider = tracer_provider()
    if provider is None:
        return None
    if _tracer is None or _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer("stratus_db", _VERSION))
    return _tracer[1]


class OperationSpan:
    """The span of one database call, current (the parent of what the call traces) from `start` to `end`."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    @classmethod
    def start(cls, name: str, backend: str, read_only: bool) -> OperationSpan | None:
        """None when nothing traces."""
        tracer = _active_tracer()
        if tracer is None:
            return None
        return cls(
            tracer.start_span(
                name,
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system.name": backend,
                    "db.operation.name": name,
                    "stratus.read_only": read_only,
                },
            )
        )

    def end(self, error: BaseException | None) -> None:
        try:
            if error is not None:
                self._span.record_exception(error)
                self._span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self._span.end()
        finally:
            otel_context.detach(self._token)
