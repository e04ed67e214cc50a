"""Background history compression: add_message asks for it once a conversation's window grows past the threshold.

A summary can take seconds (a remote model), so it never runs inside the append that triggered it: one task per
conversation at a time runs `compress_history` after the append committed. A failed compression is logged and
tried again by a later append; `db.close()` waits for the tasks in flight.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from stratus_db.conversations.summarizer import OpenAISummarizer, Summarizer, summarizer_for
from stratus_db.errors import StratusError
from stratus_db.kit.tasks import start_background

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration


class HistoryCompression:
    """The summarizer and the in-flight background compressions of one database handle."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        # The host's own summarizer, else the one STRATUS_SUMMARIZER names (never OpenAI unless chosen).
        self.summarizer: Summarizer = (
            db.summarizer if db.summarizer is not None else summarizer_for(db.settings)
        )
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        db.on_close(self.close)

    @classmethod
    def of(cls, db: StratusPostgreSQLIntegration) -> HistoryCompression:
        return db.extension("conversations.history", lambda: cls(db))

    def schedule(self, conversation_id: uuid.UUID, compress: Callable[[], Awaitable[object]]) -> None:
        """Run `compress` in the background unless this conversation's compression is already running."""
        if conversation_id in self._running:
            return

        async def run() -> None:
            try:
                await compress()
            except StratusError as exc:  # a background task has no caller to raise to
                self._db.log.warning(
                    "background history compression failed",
                    operation="conversation.compress_history",
                    conversation_id=str(conversation_id),
                    error=type(exc).__name__,
                )
            finally:
                self._running.pop(conversation_id, None)

        # Anything else is a defect: start_background logs its traceback.
        self._running[conversation_id] = start_background(
            run(), log=self._db.log, what="conversation.compress_history"
        )

    async def wait(self) -> None:
        """Until every compression in flight has finished."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        await self.wait()
        if isinstance(self.summarizer, OpenAISummarizer):
            await self.summarizer.close()
