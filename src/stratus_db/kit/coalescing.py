"""What the coalescers of concurrent calls (memory stores, message appends) share: each caller's own outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stratus_db.errors import StratusError

T = TypeVar("T")


@dataclass(eq=False)
class Queued(Generic[T]):
    """One caller's place in a batch: it awaits `outcome`, which gets its own result or its own error."""

    outcome: asyncio.Future[T] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future(), kw_only=True
    )

    def settle(self, result: T) -> None:
        if not self.outcome.done():  # a caller cancelled meanwhile no longer listens
            self.outcome.set_result(result)

    def fail(self, error: StratusError) -> None:
        if not self.outcome.done():
            self.outcome.set_exception(error)
