"""JSON log lines in the spec's shape, built with structlog on a logger of our own (no global configuration)."""

from __future__ import annotations

import os
import resource
import sys
import threading
from typing import Any, TextIO

import structlog
from structlog.processors import CallsiteParameter, CallsiteParameterAdder
from structlog.typing import EventDict, WrappedLogger

from stratus_db.config import LogLevel
from stratus_db.context import current_trace_id

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}


def _peak_memory_mb() -> float:
    # ru_maxrss is in KiB on Linux: the process's peak resident set, cheap to read on every line.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _spec_shape(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Rename structlog's keys to the spec's and put them first, in the spec's order."""
    shaped: dict[str, Any] = {
        "timestamp": event.pop("timestamp"),
        "level": str(event.pop("level")).upper(),
        "log_type": event.pop("log_type", "DATABASE"),
        "trace_id": current_trace_id(),
        "message": event.pop("event"),
        "module": event.pop("module", None),
        "function": event.pop("func_name", None),
        "line": event.pop("lineno", None),
        "process_id": os.getpid(),
        "thread_id": threading.get_ident(),
    }
    metrics = {"memory_usage_mb": _peak_memory_mb()}
    duration = event.pop("duration_ms", None)
    if duration is not None:
        metrics = {"operation_duration_ms": round(float(duration), 3), **metrics}
    shaped.update(event)
    shaped["metrics"] = metrics
    return shaped


def make_logger(
    level: LogLevel = LogLevel.INFO, stream: TextIO | None = None
) -> structlog.typing.FilteringBoundLogger:
    """A logger that writes one JSON object per line to `stream` (default: standard error)."""
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,  # exc_info=... becomes an "exception" field with the traceback
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        CallsiteParameterAdder(
            [CallsiteParameter.MODULE, CallsiteParameter.FUNC_NAME, CallsiteParameter.LINENO],
            # The operation runner logs on behalf of the manager method that called it: report that method.
            additional_ignores=["stratus_db.database", "stratus_db.logging"],
        ),
        _spec_shape,
        structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
    ]
    # Bound now: wrap_logger returns a lazy proxy that looks the logger up again on every call (about 1 µs of each
    # operation, most of which log nothing at the configured level).
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.WriteLogger(stream if stream is not None else sys.stderr),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.value]),
    ).bind()
    return logger
