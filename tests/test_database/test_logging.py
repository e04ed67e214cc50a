"""Logging: records under the standard `stratus_db` logger, silent unless the host configures it, and the spec's JSON
lines (with Cloud Logging's fields) when it opts in with `configure_json`."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from stratus_db import Database, UserManager
from stratus_db.errors import ConflictError, DatabaseUnavailableError
from stratus_db.logging import LOGGER_NAME, configure_json, get_logger
from tests.fixtures.factories import create_user

SPEC_FIELDS = [
    "timestamp",
    "level",
    "severity",
    "log_type",
    "trace_id",
    "message",
    "module",
    "function",
    "line",
    "process_id",
    "thread_id",
]


@pytest.fixture
def json_stream() -> io.StringIO:
    """Where `configure_json` writes in a test (conftest.py restores the `stratus_db` logger afterwards)."""
    return io.StringIO()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_the_spec_fields_in_order(json_stream: io.StringIO) -> None:
    configure_json("INFO", json_stream)
    get_logger().info("User created successfully", duration_ms=125.0)
    (line,) = _lines(json_stream)
    assert list(line)[: len(SPEC_FIELDS)] == SPEC_FIELDS
    assert line["level"] == line["severity"] == "INFO"
    assert line["log_type"] == "DATABASE"
    assert line["message"] == "User created successfully"
    assert line["function"] == "test_a_line_has_the_spec_fields_in_order"
    assert line["metrics"]["operation_duration_ms"] == 125.0
    assert line["metrics"]["memory_usage_mb"] > 0
    assert line["timestamp"].endswith("Z")
    assert "logging.googleapis.com/trace" not in line, "no project, no Cloud trace field"


def test_lines_below_the_level_are_dropped(json_stream: io.StringIO) -> None:
    configure_json("WARNING", json_stream)
    logger = get_logger()
    logger.info("quiet")
    logger.warning("loud")
    assert [line["message"] for line in _lines(json_stream)] == ["loud"]


async def test_manager_calls_log_under_the_context_trace_id_at_debug(
    json_stream: io.StringIO, db: Database, users: UserManager
) -> None:
    configure_json("DEBUG", json_stream, gcp_project="stratus-ia")
    async with db.context(trace_id="trace-abc-123"):
        user = await create_user(users)
        await users.get_user(user.user_id)
    await users.get_user(user.user_id)  # outside any context: a fresh trace id

    lines = _lines(json_stream)
    assert [(line["message"], line["function"], line["level"]) for line in lines] == [
        ("user.create succeeded", "create_user", "DEBUG"),
        ("user.get succeeded", "get_user", "DEBUG"),
        ("user.get succeeded", "get_user", "DEBUG"),
    ]
    assert [line["trace_id"] for line in lines[:2]] == ["trace-abc-123", "trace-abc-123"]
    assert lines[0]["logging.googleapis.com/trace"] == "projects/stratus-ia/traces/trace-abc-123"
    assert lines[2]["trace_id"] not in ("trace-abc-123", None)
    assert lines[2]["module"] == "manager"


async def test_the_library_prints_nothing_unless_configured(
    users: UserManager, capfd: pytest.CaptureFixture[str]
) -> None:
    user = await create_user(users)
    with pytest.raises(ConflictError):
        await users.create_user("Outro", user.email, "pilot")  # a failure: logged at WARNING

    assert capfd.readouterr().err == ""


async def test_caplog_sees_the_records_with_their_fields(
    users: UserManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        user = await create_user(users)
        with pytest.raises(ConflictError):
            await users.create_user("Outro", user.email, "pilot")

    records = [record for record in caplog.records if record.name == LOGGER_NAME]
    assert [(record.levelname, record.getMessage()) for record in records] == [
        ("DEBUG", "user.create succeeded"),
        ("WARNING", "user.create failed"),
    ]
    failed = records[1]
    assert (failed.operation, failed.error, failed.code_function) == (  # type: ignore[attr-defined]
        "user.create",
        "ConflictError",
        "create_user",
    )
    assert failed.duration_ms > 0  # type: ignore[attr-defined]


async def test_healthy_calls_log_nothing_at_info(
    users: UserManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        user = await create_user(users)
        await users.get_user(user.user_id)

    assert [record for record in caplog.records if record.name == LOGGER_NAME] == []


async def test_a_slow_call_logs_a_warning(
    db: Database, users: UserManager, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "_slow_operation_s", 0.0)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        await create_user(users)

    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME] == [
        ("WARNING", "user.create was slow")
    ]


async def test_a_retry_logs_a_warning(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    attempts = 0

    async def flaky(_conn: object) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise DatabaseUnavailableError("the connection was lost before COMMIT", retryable=True)
        return "done"

    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        async with db.operation("test.retry") as op:
            assert await op.run(flaky) == "done"

    (retried,) = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert (retried.levelname, retried.getMessage(), retried.attempt) == (  # type: ignore[attr-defined]
        "WARNING",
        "test.retry retried",
        1,
    )
    assert db.metrics()["operations"]["test.retry"]["retries"] == 1
