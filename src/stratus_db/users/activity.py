"""Users' activity: `users.last_active` follows what they do, and daily/monthly active users are counted.

`last_active` is written at most once a minute per user per process: `ActivityTracker.note(user_id)` is one dict
lookup on the hot paths (add_message, add_messages, store_memory, get_memory, cache hits included); when the user's
minute has passed, the write is handed to a background task, off the caller's path, which sends one UPDATE for every
user due (`SET last_active = :now WHERE user_id = :id AND last_active < :now`, so it never moves backwards and a
profile write in between is kept). close() writes what is still pending.

`last_active` keeps only the latest activity, so active-user counts over time are computed from the messages
users wrote (`messages.created_at` of `user_input` messages): see `activity_counts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import String, bindparam, cast, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from stratus_db.errors import StratusError
from stratus_db.kit.models import table_of
from stratus_db.kit.schemas import FrozenModel
from stratus_db.kit.tasks import start_background
from stratus_db.kit.types import UTCDateTime
from stratus_db.models import MessageRow, MessageType, UserRow

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

ACTIVITY_INTERVAL = timedelta(minutes=1)
"""`last_active` is written at most once per interval per user and process."""
MAX_TRACKED_USERS = 100_000
"""Past this many users in the throttle, entries older than the interval are dropped (they would be due anyway)."""
MAX_PERIODS = 3660
"""The most periods (days or months) one activity_counts call returns: ten years of days."""

Granularity = Literal["day", "month"]
_users = table_of(UserRow)


class ActivityCount(FrozenModel):
    """How many distinct users wrote at least one message in the period starting on `period` (a day, or the first
    day of a month, in UTC)."""

    period: date
    active_users: int


class ActivityTracker:
    """One handle's throttle on `last_active` writes, and the writes not yet sent."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._written: dict[uuid.UUID, datetime] = {}
        """When each user's activity was last handed to a write, by this process's clock."""
        self._due: dict[uuid.UUID, datetime] = {}
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.writes = 0
        """Users whose `last_active` this handle wrote: for tests and metrics."""
        db.on_close(self.close)

    def note(self, user_id: uuid.UUID) -> None:
        """The user did something now: schedule a write of `last_active` unless one was made in the last minute."""
        now = self._db.clock()
        last = self._written.get(user_id)
        if last is not None and now - last < ACTIVITY_INTERVAL and now >= last:
            return
        if len(self._written) >= MAX_TRACKED_USERS:
            self._forget_older_than(now - ACTIVITY_INTERVAL)
        self._written[user_id] = now
        self._due[user_id] = now
        if not self._closed and (self._writer is None or self._writer.done()):
            self._writer = start_background(self._write_soon(), log=self._db.log, what="user.record_activity")

    def _forget_older_than(self, horizon: datetime) -> None:
        self._written = {user: at for user, at in self._written.items() if at >= horizon}

    async def _write_soon(self) -> None:
        await asyncio.sleep(0)  # let the caller's call finish first: the write is off its path
        # A failure was logged by the write's operation, and the users stay due for the next write.
        with contextlib.suppress(StratusError):
            await self.flush()

    async def flush(self) -> int:
        """Write every pending `last_active` now; returns how many users were due. Shielded like a cache flush:
        a cancelled caller does not cancel the write, and what could not be written is kept for the next one."""
        written = 0
        while self._due:
            batch, self._due = self._due, {}
            written += await asyncio.shield(self._write(batch))
        return written

    async def _write(self, batch: dict[uuid.UUID, datetime]) -> int:
        moment = bindparam("b_at", type_=UTCDateTime())
        statement = (
            update(_users)
            .where(UserRow.user_id == bindparam("b_user_id"), UserRow.last_active < moment)
            .values(last_active=moment)
        )
        # In key order, so that two processes writing the same users lock them in the same order.
        parameters: list[dict[str, Any]] = [
            {"b_user_id": user, "b_at": batch[user]} for user in sorted(batch)
        ]
        try:
            async with self._db.operation("user.record_activity") as op:
                await op.run(lambda conn: conn.execute(statement, parameters))
        except BaseException:
            for user, at in batch.items():
                self._due.setdefault(user, at)
            raise
        self.writes += len(parameters)
        return len(parameters)

    async def drain(self) -> int:
        """Wait for a write under way, then write what is still pending; returns how many users this wrote."""
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._writer)
        return await self.flush()

    async def close(self) -> None:
        """Write what is pending; later activity is still throttled but no longer scheduled."""
        self._closed = True
        if self._writer is not None and not self._writer.done():
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.flush()


def tracker_of(db: StratusPostgreSQLIntegration) -> ActivityTracker:
    """The handle's one tracker, shared by every manager built on it."""
    return db.extension("user.activity", lambda: ActivityTracker(db))


def _period_of(created_at: Any, granularity: Granularity, dialect: str) -> ColumnElement[str]:
    """The period a timestamp falls in, as text: "YYYY-MM-DD" or "YYYY-MM", in UTC."""
    if dialect == "sqlite":
        # UTCDateTime stores "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC on SQLite.
        return func.substr(cast(created_at, String), 1, 10 if granularity == "day" else 7)
    pattern = "YYYY-MM-DD" if granularity == "day" else "YYYY-MM"
    return func.to_char(created_at.op("AT TIME ZONE")(literal_column("'UTC'")), pattern)


def period_start(moment: datetime, granularity: Granularity) -> date:
    day = moment.date()
    return day if granularity == "day" else day.replace(day=1)


def next_period(start: date, granularity: Granularity) -> date:
    if granularity == "day":
        return start + timedelta(days=1)
    return date(start.year + start.month // 12, start.month % 12 + 1, 1)


def periods_between(since: datetime, until: datetime, granularity: Granularity) -> list[date]:
    """The periods from the one `since` falls in to the one just before `until` (exclusive), in order."""
    periods: list[date] = []
    current = period_start(since, granularity)
    while datetime.combine(current, datetime.min.time(), since.tzinfo) < until:
        periods.append(current)
        current = next_period(current, granularity)
    return periods


async def count_active(
    conn: AsyncConnection, since: datetime, until: datetime, granularity: Granularity
) -> dict[date, int]:
    """Distinct users who wrote a message (`user_input`) per period, for messages created in [since, until)."""
    period = _period_of(MessageRow.created_at, granularity, conn.dialect.name).label("period")
    statement = (
        select(period, func.count(func.distinct(MessageRow.user_id)).label("users"))
        .where(
            MessageRow.message_type == MessageType.user_input,
            MessageRow.created_at >= since,
            MessageRow.created_at < until,
        )
        .group_by(period)
    )
    counts: dict[date, int] = {}
    for row in (await conn.execute(statement)).mappings():
        text = str(row["period"])
        counts[date.fromisoformat(text if granularity == "day" else f"{text}-01")] = int(row["users"])
    return counts
