"""Log lines: JSON objects in the spec's shape, with the trace id of the request context."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from stratus_db import Database, UserManager
from stratus_db.config import LogLevel
from stratus_db.logging import make_logger
from tests.fixtures.factories import create_user

SPEC_FIELDS = [
    "timestamp",
    "level",
    "log_type",
    "trace_id",
    "message",
    "module",
    "function",
    "line",
    "process_id",
    "thread_id",
]


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_the_spec_fields_in_order() -> None:
    stream = io.StringIO()
    make_logger(LogLevel.INFO, stream).info("User created successfully", duration_ms=125.0)
    (line,) = _lines(stream)
    assert list(line)[: len(SPEC_FIELDS)] == SPEC_FIELDS
    assert line["level"] == "INFO"
    assert line["log_type"] == "DATABASE"
    assert line["message"] == "User created successfully"
    assert line["function"] == "test_a_line_has_the_spec_fields_in_order"
    assert line["metrics"]["operation_duration_ms"] == 125.0
    assert line["metrics"]["memory_usage_mb"] > 0
    assert line["timestamp"].endswith("Z")


def test_lines_below_the_level_are_dropped() -> None:
    stream = io.StringIO()
    logger = make_logger(LogLevel.WARNING, stream)
    logger.info("quiet")
    logger.warning("loud")
    assert [line["message"] for line in _lines(stream)] == ["loud"]


async def test_manager_calls_log_under_the_context_trace_id(
    db: Database, users: UserManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(db, "log", make_logger(LogLevel.DEBUG, stream))
    async with db.context(trace_id="trace-abc-123"):
        user = await create_user(users)
        await users.get_user(user.user_id)
    await users.get_user(user.user_id)  # outside any context: a fresh trace id

    lines = _lines(stream)
    assert [(line["message"], line["function"]) for line in lines] == [
        ("user.create succeeded", "create_user"),
        ("user.get succeeded", "get_user"),
        ("user.get succeeded", "get_user"),
    ]
    assert [line["trace_id"] for line in lines[:2]] == ["trace-abc-123", "trace-abc-123"]
    assert lines[2]["trace_id"] not in ("trace-abc-123", None)
    assert lines[2]["module"] == "manager"
