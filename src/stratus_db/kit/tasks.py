"""Background tasks that nobody awaits: their unexpected failures are logged, never swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from functools import partial
from typing import Any, TypeVar

from stratus_db.logging import Logger

T = TypeVar("T")


_running: set[asyncio.Task[Any]] = set()
"""Tasks started by start_background and not yet done."""


def start_background(coroutine: Coroutine[Any, Any, T], *, log: Logger, what: str) -> asyncio.Task[T]:
    """Run `coroutine` as a task of its own. An exception it ends with is logged at ERROR with its traceback, under
    `what`: asyncio would otherwise report it only when the task is garbage-collected, if ever."""
    task = asyncio.get_running_loop().create_task(coroutine)
    # The event loop keeps only a weak reference to a task: one that nobody else holds could be collected mid-run.
    _running.add(task)
    task.add_done_callback(_running.discard)
    task.add_done_callback(partial(_report_failure, log, what))
    return task


def _report_failure(log: Logger, what: str, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        log.error(f"{what} failed unexpectedly", operation=what, exc_info=error)
