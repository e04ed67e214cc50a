"""kit/tasks.py: a background task's unexpected failure is logged with its traceback, not swallowed."""

from __future__ import annotations

import asyncio
import io
import json

from stratus_db.kit.tasks import start_background
from stratus_db.logging import make_logger


async def _fails() -> None:
    await asyncio.sleep(0)
    raise ValueError("um defeito")


async def test_a_failed_background_task_is_logged_with_its_traceback() -> None:
    stream = io.StringIO()
    task = start_background(_fails(), log=make_logger(stream=stream), what="test.background")
    await asyncio.wait({task})
    await asyncio.sleep(0)  # the done callback runs on the next turn

    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["level"], line["message"], line["operation"]) == (
        "ERROR",
        "test.background failed unexpectedly",
        "test.background",
    )
    assert "ValueError: um defeito" in line["exception"]
    assert "_fails" in line["exception"], "the traceback names where it failed"


async def test_a_cancelled_or_finished_background_task_logs_nothing() -> None:
    stream = io.StringIO()
    log = make_logger(stream=stream)
    finished = start_background(asyncio.sleep(0, result=3), log=log, what="test.finished")
    cancelled = start_background(asyncio.sleep(60), log=log, what="test.cancelled")
    cancelled.cancel()
    await asyncio.wait({finished, cancelled})
    await asyncio.sleep(0)

    assert await finished == 3
    assert stream.getvalue() == ""
