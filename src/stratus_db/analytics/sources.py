"""Where the figures are read from: the daily rollups for the days they hold, the messages for the days after them.

`activity(...)` is one selectable of per-day rows (day, user, agent, type: messages, tokens, conversations, response
times) whichever way each day is counted, so every figure is one statement over it. The rollup job writes the very
rows the tail computes (`day_rows`), so a day reads the same rolled up or not.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    CTE,
    Select,
    String,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.analytics.calendar import LocalCalendar
from stratus_db.errors import ConflictError
from stratus_db.kit.models import table_of
from stratus_db.kit.sql import insert_for, local_day, response_time_bucket
from stratus_db.models import (
    ActivityDailyRow,
    MessageRow,
    MessageType,
    ResponseTimeDailyRow,
    RollupStateRow,
    ServiceSampleRow,
)

AnySelect = Select[*tuple[Any, ...]]

ROLLUP: Final = "activity"
"""The rollup_state row of the daily rollups."""
_ROLLUP_LOCK: Final = 0x5EA1_0A11
"""One rollup job at a time (PostgreSQL advisory lock; SQLite has one writer anyway)."""
NO_AGENT: Final = ""
"""The agent of the messages no agent wrote, in the rollups (a key column cannot be NULL)."""

_activity_daily = table_of(ActivityDailyRow)
_response_times = table_of(ResponseTimeDailyRow)
_state = table_of(RollupStateRow)
_samples = table_of(ServiceSampleRow)
ACTIVITY_COLUMNS: Final = (
    "day",
    "user_id",
    "agent_name",
    "message_type",
    "messages",
    "tokens",
    "conversations",
    "timed",
    "time_total",
)


def day_rows(calendar: LocalCalendar, start: datetime, end: datetime) -> AnySelect:
    """The activity rows of the messages created in [start, end): per local day, user, agent and type."""
    day = local_day(MessageRow.created_at, literal(calendar.zone_name, String)).label("day")
    agent = func.coalesce(MessageRow.agent_name, NO_AGENT).label("agent_name")
    return (
        select(
            day,
            MessageRow.user_id,
            agent,
            MessageRow.message_type,
            func.count().label("messages"),
            func.coalesce(func.sum(MessageRow.tokens_used), 0).label("tokens"),
            func.count(func.distinct(MessageRow.conversation_id)).label("conversations"),
            func.count(MessageRow.response_time).label("timed"),
            func.coalesce(func.sum(MessageRow.response_time), 0.0).label("time_total"),
        )
        .where(MessageRow.created_at >= start, MessageRow.created_at < end)
        .group_by(day, MessageRow.user_id, agent, MessageRow.message_type)
    )


def histogram_rows(calendar: LocalCalendar, start: datetime, end: datetime) -> AnySelect:
    """The response-time histogram of the agents' responses created in [start, end), per local day and agent."""
    day = local_day(MessageRow.created_at, literal(calendar.zone_name, String)).label("day")
    agent = func.coalesce(MessageRow.agent_name, NO_AGENT).label("agent_name")
    bucket = response_time_bucket(MessageRow.response_time).label("bucket")
    return (
        select(day, agent, bucket, func.count().label("responses"))
        .where(
            MessageRow.created_at >= start,
            MessageRow.created_at < end,
            MessageRow.message_type == MessageType.agent_response,
            MessageRow.response_time.is_not(None),
        )
        .group_by(day, agent, bucket)
    )


def activity(calendar: LocalCalendar, first: date, last: date, through: date | None) -> CTE:
    """The activity rows of the local days `first` … `last`: rolled up through `through`, counted after it."""
    parts: list[AnySelect] = []
    if through is not None and through >= first:
        parts.append(
            select(*(_activity_daily.c[name] for name in ACTIVITY_COLUMNS)).where(
                _activity_daily.c.day.between(first, min(last, through))
            )
        )
    counted_from = first if through is None else max(first, through + timedelta(days=1))
    if counted_from <= last:
        parts.append(day_rows(calendar, *calendar.bounds(counted_from, last)))
    if not parts:  # nothing to read: an empty set of the right shape
        parts.append(day_rows(calendar, *calendar.bounds(first, first)).where(literal(False)))
    return (parts[0] if len(parts) == 1 else union_all(*parts)).cte("activity")


def active_pairs(rows: CTE, agent: str | None) -> CTE:
    """(day, user) of every user active that day: who wrote; with an agent, who wrote and was answered by it."""
    wrote = select(rows.c.day, rows.c.user_id).where(rows.c.message_type == MessageType.user_input)
    if agent is None:
        return wrote.distinct().cte("active")
    answered = select(rows.c.day, rows.c.user_id).where(
        rows.c.agent_name == agent, rows.c.message_type == MessageType.agent_response
    )
    return wrote.intersect(answered).cte("active")


async def response_histogram(
    conn: AsyncConnection,
    calendar: LocalCalendar,
    first: date,
    last: date,
    through: date | None,
) -> dict[str, Counter[int]]:
    """Per agent, the responses of `first` … `last` per bucket: rolled up through `through`, counted after it."""
    histograms: dict[str, Counter[int]] = {}
    statements: list[AnySelect] = []
    if through is not None and through >= first:
        statements.append(
            select(
                _response_times.c.agent_name,
                _response_times.c.bucket,
                func.sum(_response_times.c.responses).label("responses"),
            )
            .where(_response_times.c.day.between(first, min(last, through)))
            .group_by(_response_times.c.agent_name, _response_times.c.bucket)
        )
    counted_from = first if through is None else max(first, through + timedelta(days=1))
    if counted_from <= last:
        counted = histogram_rows(calendar, *calendar.bounds(counted_from, last)).subquery()
        statements.append(
            select(
                counted.c.agent_name, counted.c.bucket, func.sum(counted.c.responses).label("responses")
            ).group_by(counted.c.agent_name, counted.c.bucket)
        )
    for statement in statements:
        for row in await conn.execute(statement):
            histograms.setdefault(row.agent_name, Counter())[row.bucket] += int(row.responses)
    return histograms


# -- the rollup job -------------------------------------------------------------------------------------------------


async def lock_rollups(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ROLLUP_LOCK})


async def rollup_state(conn: AsyncConnection) -> tuple[str, date] | None:
    """The time zone of the rollups and the last day they hold; None before the first rollup."""
    row = (
        await conn.execute(select(_state.c.time_zone, _state.c.rolled_through).where(_state.c.name == ROLLUP))
    ).one_or_none()
    return None if row is None else (row.time_zone, row.rolled_through)


async def drop_rollups(conn: AsyncConnection) -> None:
    for table in (_activity_daily, _response_times):
        await conn.execute(delete(table))
    await conn.execute(delete(_state).where(_state.c.name == ROLLUP))


async def purge_samples(conn: AsyncConnection, before: datetime) -> int:
    """Delete the service samples of the minutes before `before`; returns how many rows went."""
    deleted = await conn.execute(delete(_samples).where(_samples.c.minute < before))
    return int(deleted.rowcount)


async def first_message_day(conn: AsyncConnection, calendar: LocalCalendar) -> date | None:
    first = (await conn.execute(select(func.min(MessageRow.created_at)))).scalar_one()
    return None if first is None else calendar.day_of(first)


async def roll_up_days(
    conn: AsyncConnection, calendar: LocalCalendar, first: date, last: date, now: datetime
) -> None:
    """Count the local days `first` … `last` into the rollups (again, if they held them) and record how far they go,
    under the rollups' lock; the state is read again here, as another job may have run meanwhile.

    The recorded day moves on only when the rollups are whole up to `first`: a backdated import may have moved it back
    (`rollups_stale_from`), and the next run counts again from there.

    Raises:
        ConflictError: another job is rolling up in another time zone (a deployment half done).
    """
    await lock_rollups(conn)
    state = await rollup_state(conn)
    if state is not None and state[0] != calendar.zone_name:
        raise ConflictError(
            f"the rollups are kept in {state[0]} and this job counts in {calendar.zone_name}: "
            "give every process the same STRATUS_METRICS_TIME_ZONE"
        )
    if state is not None and state[1] >= last:
        return  # another job has rolled these days up
    for table in (_activity_daily, _response_times):
        await conn.execute(delete(table).where(table.c.day.between(first, last)))
    start, end = calendar.bounds(first, last)
    await conn.execute(
        insert(_activity_daily).from_select(list(ACTIVITY_COLUMNS), day_rows(calendar, start, end))
    )
    await conn.execute(
        insert(_response_times).from_select(
            ["day", "agent_name", "bucket", "responses"], histogram_rows(calendar, start, end)
        )
    )
    through = last if state is None or state[1] >= first - timedelta(days=1) else state[1]
    statement = insert_for(conn, _state).values(
        name=ROLLUP, time_zone=calendar.zone_name, rolled_through=through, updated_at=now
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[_state.c.name], set_={"rolled_through": through, "updated_at": now}
        )
    )


async def rollups_stale_from(conn: AsyncConnection, earliest: datetime) -> None:
    """Messages written at `earliest` or later were just stored with their own times (an import of old history): if
    the rollups hold that day, move their recorded end back before it, so the next rollup counts it again."""
    state = await rollup_state(conn)
    if state is None:
        return
    day = LocalCalendar(state[0]).day_of(earliest)
    if day <= state[1]:
        await conn.execute(
            update(_state)
            .where(_state.c.name == ROLLUP, _state.c.rolled_through >= day)
            .values(rolled_through=day - timedelta(days=1))
        )
