"""Counts that outlive the process: each handle adds its calls, requests, probes and cache lookups per minute to
`service_samples`, so that error rates and availability can be reported over any range (docs/metrics.md).

Counting is a dict increment on the caller's path; the counts are written every STRATUS_METRICS_FLUSH_S seconds and
when the handle closes. Counts that cannot be written (the database is down) are kept and written with the next
flush, at most a day of minutes of them: an outage is recorded once it is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from stratus_db.errors import (
    ConflictError,
    ConsentRequiredError,
    NotFoundError,
    PermissionDeniedError,
    StratusError,
    ValidationError,
)
from stratus_db.kit.models import table_of
from stratus_db.kit.sql import insert_for
from stratus_db.kit.tasks import start_background
from stratus_db.models import ServiceSampleRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from stratus_db.database import StratusPostgreSQLIntegration

CALLER_ERRORS: Final = (
    ValidationError,
    NotFoundError,
    PermissionDeniedError,
    ConsentRequiredError,
    ConflictError,
)
"""Errors the caller's input or rights caused: a refusal, not a failure of the system."""
MAX_PENDING_MINUTES: Final = 24 * 60
FLUSH_OPERATION: Final = "analytics.flush_samples"
"""The flush's own operation, not counted: it would make every flush schedule the next one."""

_samples = table_of(ServiceSampleRow)


class SampleKind(StrEnum):
    operation = "operation"
    """A library call, by operation name (`user.get`)."""
    http = "http"
    """A request of the service, by route template; failed: answered 5xx."""
    probe = "probe"
    """A readiness probe (`/ready`); failed: not ready."""
    cache = "cache"
    """A memory cache lookup (`memory`); failed: a miss."""


def instance_name() -> str:
    """Who wrote a sample: the host (a Cloud Run instance's is unique), the process, and a random part for processes
    that share both."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class ServiceSamples:
    """One handle's counts per (minute, kind, name) not yet written: [total, failed, refused]."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self.instance = instance_name()
        self._interval = db.settings.STRATUS_METRICS_FLUSH_S
        self._pending: dict[tuple[int, str, str], list[int]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = False
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self._interval > 0

    def count(self, kind: SampleKind, name: str, *, failed: bool = False, refused: bool = False) -> None:
        if not self.enabled or self._closed:
            return
        key = (int(time.time()) // 60, kind.value, name)
        counts = self._pending.get(key)
        if counts is None:
            counts = self._pending[key] = [0, 0, 0]
            if self._flusher is None or self._flusher.done():
                self._flusher = start_background(self._flush_later(), log=self._db.log, what=FLUSH_OPERATION)
        counts[0] += 1
        counts[1] += failed
        counts[2] += refused

    def count_outcome(self, name: str, error: BaseException | None) -> None:
        """A library call's outcome: a refusal when the caller caused its error, else a failure."""
        if name == FLUSH_OPERATION:
            return
        refused = isinstance(error, CALLER_ERRORS)
        self.count(SampleKind.operation, name, failed=error is not None and not refused, refused=refused)

    async def _flush_later(self) -> None:
        """Flush after an interval, and again after each interval while the flush fails (the database is down: the
        counts were kept), until one succeeds."""
        while True:
            await asyncio.sleep(self._interval)
            self._flushing = True
            try:
                await self.flush()
                return
            except StratusError:
                continue  # logged by the flush's operation
            finally:
                self._flushing = False

    async def flush(self) -> int:
        """Write the counts taken so far (added to what the same minutes already hold); returns the rows written."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        return await asyncio.shield(self._write(batch))

    async def _write(self, batch: dict[tuple[int, str, str], list[int]]) -> int:
        rows = [
            {
                "minute": datetime.fromtimestamp(minute * 60, UTC),
                "instance": self.instance,
                "kind": kind,
                "name": name[:200],
                "total": total,
                "failed": failed,
                "refused": refused,
            }
            for (minute, kind, name), (total, failed, refused) in sorted(batch.items())
        ]
        try:
            async with self._db.operation(FLUSH_OPERATION) as op:

                async def write(conn: AsyncConnection) -> None:
                    statement = insert_for(conn, _samples).values(rows)
                    await conn.execute(
                        statement.on_conflict_do_update(
                            index_elements=["minute", "instance", "kind", "name"],
                            set_={
                                column: _samples.c[column] + statement.excluded[column]
                                for column in ("total", "failed", "refused")
                            },
                        )
                    )

                await op.run(write)
        except BaseException:
            self._keep(batch)
            raise
        return len(rows)

    def _keep(self, batch: dict[tuple[int, str, str], list[int]]) -> None:
        for key, counts in batch.items():
            current = self._pending.setdefault(key, [0, 0, 0])
            for position, value in enumerate(counts):
                current[position] += value
        newest = max(minute for minute, _kind, _name in self._pending)
        for key in [key for key in self._pending if key[0] <= newest - MAX_PENDING_MINUTES]:
            del self._pending[key]

    async def close(self) -> None:
        """Write what is counted; later counts are dropped (the handle is closing). Never raises: the samples are
        operational figures, and closing must not fail for them (a schema without their table, an outage)."""
        if self._flusher is not None and not self._flusher.done():
            if not self._flushing:
                # Waiting, or not even started yet: the flush below writes what it would have.
                self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._closed = True
        try:
            await self.flush()
        except StratusError as exc:
            self._db.log.warning("the last service samples could not be written", error=type(exc).__name__)
