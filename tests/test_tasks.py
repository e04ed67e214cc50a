"""kit/tasks.py: a background task's unexpected failure is logged with its traceback, not swallowed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stratus_db.kit.tasks import start_background
from stratus_db.logging import LOGGER_NAME, get_logger


async def _fails() -> None:
    await asyncio.sleep(0)
    raise ValueError("um defeito")


async def test_a_failed_background_task_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        task = start_background(_fails(), log=get_logger(), what="test.background")
        await asyncio.wait({task})
        await asyncio.sleep(0)  # the done callback runs on the next turn

    (record,) = [record for record in caplog.records if record.name == LOGGER_NAME]
    assert (record.levelname, record.getMessage(), record.operation) == (  # type: ignore[attr-defined]
        "ERROR",
        "test.background failed unexpectedly",
        "test.background",
    )
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    assert "_fails" in caplog.text, "the traceback names where it failed"


async def test_a_cancelled_or_finished_background_task_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        log = get_logger()
        finished = start_background(asyncio.sleep(0, result=3), log=log, what="test.finished")
        cancelled = start_background(asyncio.sleep(60), log=log, what="test.cancelled")
        cancelled.cancel()
        await asyncio.wait({finished, cancelled})
        await asyncio.sleep(0)

    assert await finished == 3
    assert [record for record in caplog.records if record.name == LOGGER_NAME] == []
