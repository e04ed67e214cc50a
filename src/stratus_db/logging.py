"""Logging as a library should do it: records go to the standard `logging` module, under the `stratus_db` logger.

Nothing is printed unless the host says so: the `stratus_db` logger has a `NullHandler` and no level of its own, so
the application's logging configuration decides where its records go (files, Sentry, pytest's `caplog`) and which
levels pass. The library builds its records with structlog's standard-library integration: each record's message is
the event (`"memory.store failed"`) and its fields are record attributes (`operation`, `error`, `duration_ms`,
`trace_id`, and where the call came from: `code_module`, `code_function`, `code_line`).

`configure_json()` opts in to the spec's JSON lines (with `severity` and Cloud Logging's trace field): the CLI and
the HTTP service call it; an application may too.

What a healthy process logs: failures and retries at WARNING, operations slower than
STRATUS_LOG_SLOW_OPERATION_MS at WARNING, unexpected errors at ERROR with their traceback, and one line per call only
at DEBUG, so that the hot paths pay for a level check and nothing else.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog
from structlog.processors import CallsiteParameter, CallsiteParameterAdder
from structlog.typing import EventDict, WrappedLogger

from stratus_db.config import LogLevel
from stratus_db.context import current_trace_id

LOGGER_NAME = "stratus_db"
Logger = structlog.stdlib.BoundLogger
"""What `get_logger()` returns: `.debug/.info/.warning/.error(message, **fields)`."""

_library_logger = logging.getLogger(LOGGER_NAME)
_library_logger.addHandler(logging.NullHandler())

_CALLSITE_FIELDS = {"module": "code_module", "func_name": "code_function", "lineno": "code_line"}
"""CallsiteParameterAdder's keys, renamed: `module` is a LogRecord attribute that `extra` may not overwrite."""


def _record_fields(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """The fields every record carries beside the caller's: the trace id and where the call came from."""
    for key, field in _CALLSITE_FIELDS.items():
        if key in event:
            event[field] = event.pop(key)
    event["trace_id"] = current_trace_id()
    return event


def get_logger() -> Logger:
    """The library's logger: records to the standard `stratus_db` logger, built only when its level lets them pass."""
    logger: Logger = structlog.wrap_logger(
        _library_logger,
        processors=[
            structlog.stdlib.filter_by_level,
            CallsiteParameterAdder(
                [CallsiteParameter.MODULE, CallsiteParameter.FUNC_NAME, CallsiteParameter.LINENO],
                # The operation runner logs on behalf of the manager method that called it: report that method.
                additional_ignores=["stratus_db.database", "stratus_db.logging", "stratus_db.kit.tasks"],
            ),
            _record_fields,
            structlog.stdlib.render_to_log_kwargs,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    return logger


def _memory_usage_mb() -> float:
    """The process's resident memory now (Linux's /proc), else its peak (where /proc is absent)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
        return round(resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class _SpecShape:
    """The spec's line (docs/operations.md): its keys in its order, then Cloud Logging's, then the record's own."""

    def __init__(self, gcp_project: str | None) -> None:
        self._gcp_project = gcp_project

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        record: logging.LogRecord = event.pop("_record")
        level = record.levelname
        trace_id = event.pop("trace_id", None) or current_trace_id()
        shaped: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": level,
            "severity": level,  # what Cloud Logging reads the level from
            "log_type": event.pop("log_type", "DATABASE"),
            "trace_id": trace_id,
            "message": event.pop("event"),
            "module": event.pop("code_module", record.module),
            "function": event.pop("code_function", record.funcName),
            "line": event.pop("code_line", record.lineno),
            "process_id": record.process or os.getpid(),
            "thread_id": record.thread or threading.get_ident(),
        }
        if self._gcp_project:
            shaped["logging.googleapis.com/trace"] = f"projects/{self._gcp_project}/traces/{trace_id}"
        for key in ("level", "logger", "_from_structlog"):
            event.pop(key, None)
        metrics = {"memory_usage_mb": _memory_usage_mb()}
        duration = event.pop("duration_ms", None)
        if duration is not None:
            metrics = {"operation_duration_ms": round(float(duration), 3), **metrics}
        shaped.update(event)
        shaped["metrics"] = metrics
        return shaped


def json_formatter(*, gcp_project: str | None = None) -> logging.Formatter:
    """A `logging.Formatter` writing each record as one JSON object in the spec's shape (for a handler of the host's
    own). `gcp_project` (default: the GOOGLE_CLOUD_PROJECT environment variable) adds Cloud Logging's trace field."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.processors.format_exc_info,  # exc_info becomes an "exception" field with the traceback
            _SpecShape(gcp_project if gcp_project is not None else os.environ.get("GOOGLE_CLOUD_PROJECT")),
            structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
        ],
        keep_exc_info=False,
        keep_stack_info=False,
    )


def configure_json(
    level: LogLevel | str = LogLevel.INFO, stream: TextIO | None = None, *, gcp_project: str | None = None
) -> logging.Handler:
    """Opt in to the spec's JSON lines: the `stratus_db` logger writes records of `level` and above to `stream`
    (default: standard error), one JSON object a line (`json_formatter`). Returns the handler: remove it from
    `logging.getLogger("stratus_db")` to undo. Configuring again replaces the previous handler."""
    for handler in list(_library_logger.handlers):
        if getattr(handler, "_stratus_json", False):
            _library_logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(json_formatter(gcp_project=gcp_project))
    handler._stratus_json = True  # type: ignore[attr-defined]
    _library_logger.addHandler(handler)
    _library_logger.setLevel(LogLevel(level).value)
    return handler
