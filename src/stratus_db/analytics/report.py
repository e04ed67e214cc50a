"""The report: each figure of docs/metrics.md, one statement each over the activity rows (analytics/sources.py),
the conversations, the users, the memories and the service samples."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import CTE, String, distinct, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.analytics import sources
from stratus_db.analytics.calendar import LocalCalendar, days, monday_of
from stratus_db.analytics.schemas import (
    AgentFigures,
    Availability,
    Cohort,
    CurrentFigures,
    DayFigures,
    MemoryFigures,
    MetricsReport,
    MonthEngagement,
    OperationQuality,
    RoleFigures,
)
from stratus_db.kit.histogram import percentile
from stratus_db.kit.samples import SampleKind
from stratus_db.kit.sql import local_day, month_start, week_start
from stratus_db.models import ConversationRow, MemoryRow, MessageType, ServiceSampleRow, UserRow
from stratus_db.privacy.erasure import is_tombstone

LOOKBACK_DAYS = 29
"""MAU looks at the 30 days ending on a day."""
RETENTION_WEEKS = 8


@dataclass(frozen=True)
class Window:
    calendar: LocalCalendar
    since: date
    until: date
    today: date
    agent: str | None
    through: date | None
    """The last day the rollups hold (in this calendar's zone), or None."""

    @property
    def first_read(self) -> date:
        """The first day any figure reads: MAU and stickiness look back 29 days before `until`."""
        return min(self.since, self.until - timedelta(days=LOOKBACK_DAYS))

    @property
    def last_read(self) -> date:
        """The last: the retention of the range's cohorts runs up to eight weeks later, never past today."""
        return min(
            max(self.until, monday_of(self.until) + timedelta(weeks=RETENTION_WEEKS + 1) - timedelta(days=1)),
            self.today,
        )


async def build(conn: AsyncConnection, window: Window, generated_at: datetime) -> MetricsReport:
    calendar, since, until = window.calendar, window.since, window.until
    rows = sources.activity(calendar, window.first_read, max(window.last_read, until), window.through)
    active = sources.active_pairs(rows, window.agent)

    # Usage: DAU per day, WAU/MAU/stickiness on `until`, active users over the range.
    dau = {
        row.day: row.users
        for row in await conn.execute(
            select(active.c.day, func.count().label("users"))
            .where(active.c.day.between(window.first_read, until))
            .group_by(active.c.day)
        )
    }
    distinct_users = func.count(distinct(active.c.user_id))
    windows = (
        await conn.execute(
            select(
                distinct_users.filter(active.c.day >= until - timedelta(days=6)).label("wau"),
                distinct_users.filter(active.c.day >= until - timedelta(days=LOOKBACK_DAYS)).label("mau"),
                distinct_users.filter(active.c.day >= since).label("range"),
            ).where(active.c.day.between(window.first_read, until))
        )
    ).one()
    mau = int(windows.mau)
    month_of_dau = sum(dau.get(day, 0) for day in days(until - timedelta(days=LOOKBACK_DAYS), until))
    stickiness = month_of_dau / (LOOKBACK_DAYS + 1) / mau if mau else 0.0

    volume = await _volume(conn, rows, window)
    # With an agent filter, the conversations of a day are those the agent answered that day.
    started_by_role = (
        volume.conversations_answered if window.agent is not None else await _started_by_role(conn, window)
    )
    started: dict[date, int] = defaultdict(int)
    started_per_role: dict[str, int] = defaultdict(int)
    for (day, role), count in started_by_role.items():
        started[day] += count
        started_per_role[role] += count
    per_day = [
        DayFigures(
            day=day,
            active_users=dau.get(day, 0),
            conversations=started.get(day, 0),
            messages=volume.messages_per_day.get(day, 0),
            tokens=volume.tokens_per_day.get(day, 0),
        )
        for day in days(since, until)
    ]
    histograms = await sources.response_histogram(conn, calendar, since, until, window.through)
    sizes = await _conversation_sizes(conn, window)
    engagement = await _engagement(conn, active, window)
    cohorts = await _cohorts(conn, active, window)
    range_start, range_end = calendar.bounds(since, until)
    samples = await sample_totals(conn, range_start, range_end)
    conversations = sum(started.values())
    return MetricsReport(
        since=since,
        until=until,
        time_zone=calendar.zone_name,
        agent=window.agent,
        agents=sorted(volume.agent_names),
        generated_at=generated_at,
        rolled_through=window.through,
        daily_active_users=dau.get(until, 0),
        weekly_active_users=int(windows.wau),
        monthly_active_users=mau,
        stickiness=stickiness,
        active_users=int(windows.range),
        conversations=conversations,
        messages=sum(volume.messages_per_day.values()),
        tokens=sum(volume.tokens_per_day.values()),
        days=per_day,
        per_type=volume.per_type,
        per_role=[
            RoleFigures(
                role=role,
                conversations=started_per_role.get(role, 0),
                messages=volume.messages_per_role.get(role, 0),
            )
            for role in sorted(started_per_role.keys() | volume.messages_per_role.keys())
        ],
        messages_per_conversation_mean=statistics.fmean(sizes) if sizes else None,
        messages_per_conversation_median=float(statistics.median(sizes)) if sizes else None,
        per_agent=[
            AgentFigures(
                agent_name=agent,
                responses=figures["responses"],
                tokens=figures["tokens"],
                tokens_per_response=figures["tokens"] / figures["responses"]
                if figures["responses"]
                else None,
                conversations=figures["conversations"],
                response_time_mean=figures["time_total"] / figures["timed"] if figures["timed"] else None,
                response_time_p50=percentile(histograms.get(agent, {}), 0.5),
                response_time_p95=percentile(histograms.get(agent, {}), 0.95),
                per_day=dict(sorted(volume.responses_per_day[agent].items())),
            )
            for agent, figures in sorted(volume.agents.items())
        ],
        operations=samples.operations,
        availability=Availability(
            probes=samples.probes,
            probes_ok=samples.probes - samples.probes_failed,
            probe_availability=_ratio(samples.probes - samples.probes_failed, samples.probes),
            requests=samples.requests,
            requests_ok=samples.requests - samples.requests_failed,
            request_availability=_ratio(samples.requests - samples.requests_failed, samples.requests),
        ),
        cohorts=cohorts,
        engagement=engagement,
        conversations_per_active_user=_ratio(conversations, int(windows.range)),
        memory=await _memory(conn, generated_at, samples.cache_hits, samples.cache_lookups),
    )


async def current(conn: AsyncConnection, calendar: LocalCalendar, now: datetime) -> CurrentFigures:
    today = calendar.day_of(now)
    active = sources.active_pairs(sources.activity(calendar, today, today, None), None)
    users = (await conn.execute(select(func.count()).select_from(active))).scalar_one()
    samples = await sample_totals(conn, now - timedelta(hours=1), now + timedelta(minutes=1))
    calls = sum(operation.calls for operation in samples.operations)
    return CurrentFigures(
        active_users_today=int(users),
        error_rate=_ratio(sum(operation.failed for operation in samples.operations), calls),
        probe_availability=_ratio(samples.probes - samples.probes_failed, samples.probes),
        request_availability=_ratio(samples.requests - samples.requests_failed, samples.requests),
    )


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass
class _Volume:
    messages_per_day: dict[date, int]
    tokens_per_day: dict[date, int]
    per_type: dict[str, int]
    messages_per_role: dict[str, int]
    conversations_answered: dict[tuple[date, str], int]
    """With an agent filter: the conversations the agent answered per day and role of their user."""
    agents: dict[str, dict[str, Any]]
    responses_per_day: dict[str, dict[date, int]]
    agent_names: set[str]
    """Every agent that answered in the range, whatever the filter."""


async def _volume(conn: AsyncConnection, rows: CTE, window: Window) -> _Volume:
    """Messages and tokens per day, type, role and agent over the range, in one grouped statement."""
    statement = (
        select(
            rows.c.day,
            rows.c.agent_name,
            rows.c.message_type,
            UserRow.role,
            func.sum(rows.c.messages).label("messages"),
            func.sum(rows.c.tokens).label("tokens"),
            func.sum(rows.c.conversations).label("conversations"),
            func.sum(rows.c.timed).label("timed"),
            func.sum(rows.c.time_total).label("time_total"),
        )
        .join(UserRow, UserRow.user_id == rows.c.user_id)
        .where(rows.c.day.between(window.since, window.until))
        .group_by(rows.c.day, rows.c.agent_name, rows.c.message_type, UserRow.role)
    )
    # Every agent's rows, filtered here rather than in SQL: the dashboard's list of agents comes from the same rows.
    volume = _Volume({}, {}, dict.fromkeys(MessageType, 0), {}, {}, {}, defaultdict(dict), set())
    for row in await conn.execute(statement):
        if row.message_type == MessageType.agent_response and row.agent_name != sources.NO_AGENT:
            volume.agent_names.add(row.agent_name)
        if window.agent is not None and row.agent_name != window.agent:
            continue
        messages, tokens, role = int(row.messages), int(row.tokens), str(row.role)
        volume.messages_per_day[row.day] = volume.messages_per_day.get(row.day, 0) + messages
        volume.tokens_per_day[row.day] = volume.tokens_per_day.get(row.day, 0) + tokens
        volume.per_type[row.message_type] += messages
        volume.messages_per_role[role] = volume.messages_per_role.get(role, 0) + messages
        if row.message_type != MessageType.agent_response or row.agent_name == sources.NO_AGENT:
            continue
        agent = volume.agents.setdefault(
            row.agent_name, {"responses": 0, "tokens": 0, "conversations": 0, "timed": 0, "time_total": 0.0}
        )
        agent["responses"] += messages
        agent["tokens"] += tokens
        agent["conversations"] += int(row.conversations)
        agent["timed"] += int(row.timed)
        agent["time_total"] += float(row.time_total)
        per_day = volume.responses_per_day[row.agent_name]
        per_day[row.day] = per_day.get(row.day, 0) + messages
        key = (row.day, role)
        volume.conversations_answered[key] = volume.conversations_answered.get(key, 0) + int(
            row.conversations
        )
    volume.per_type = {str(kind): count for kind, count in volume.per_type.items()}
    return volume


async def _started_by_role(conn: AsyncConnection, window: Window) -> dict[tuple[date, str], int]:
    start, end = window.calendar.bounds(window.since, window.until)
    day = local_day(ConversationRow.created_at, literal(window.calendar.zone_name, String)).label("day")
    rows = await conn.execute(
        select(day, UserRow.role, func.count().label("started"))
        .join(UserRow, UserRow.user_id == ConversationRow.user_id)
        .where(ConversationRow.created_at >= start, ConversationRow.created_at < end)
        .group_by(day, UserRow.role)
    )
    return {(row.day, str(row.role)): int(row.started) for row in rows}


async def _conversation_sizes(conn: AsyncConnection, window: Window) -> list[int]:
    start, end = window.calendar.bounds(window.since, window.until)
    rows = await conn.execute(
        select(ConversationRow.message_count).where(
            ConversationRow.created_at >= start, ConversationRow.created_at < end
        )
    )
    return [int(count) for (count,) in rows]


async def _engagement(conn: AsyncConnection, active: CTE, window: Window) -> list[MonthEngagement]:
    """Per month of the range: the users active in it and their mean number of active days."""
    month = month_start(active.c.day).label("month")
    rows = await conn.execute(
        select(
            month, func.count().label("active_days"), func.count(distinct(active.c.user_id)).label("users")
        )
        .where(active.c.day.between(window.since, window.until))
        .group_by(month)
    )
    found = {_as_date(row.month): (int(row.active_days), int(row.users)) for row in rows}
    months = sorted({day.replace(day=1) for day in days(window.since, window.until)})
    return [
        MonthEngagement(
            month=first,
            active_users=found.get(first, (0, 0))[1],
            active_days_per_user=_ratio(*found.get(first, (0, 0))),
        )
        for first in months
    ]


async def _cohorts(conn: AsyncConnection, active: CTE, window: Window) -> list[Cohort]:
    """Users by the week they signed up (weeks of the range), and the share of each active in each of the 8 weeks
    after it."""
    calendar = window.calendar
    first_week, last_week = monday_of(window.since), monday_of(window.until)
    start, end = calendar.bounds(first_week, last_week + timedelta(days=6))
    signed_up = local_day(UserRow.created_at, literal(calendar.zone_name, String))
    cohort_of = (
        select(UserRow.user_id, week_start(signed_up).label("cohort"))
        .where(UserRow.created_at >= start, UserRow.created_at < end, ~is_tombstone())
        .cte("cohort_of")
    )
    sizes = {
        _as_date(row.cohort): int(row.users)
        for row in await conn.execute(
            select(cohort_of.c.cohort, func.count().label("users")).group_by(cohort_of.c.cohort)
        )
    }
    active_week = week_start(active.c.day).label("week")
    returning = await conn.execute(
        select(cohort_of.c.cohort, active_week, func.count(distinct(active.c.user_id)).label("users"))
        .join(cohort_of, cohort_of.c.user_id == active.c.user_id)
        .where(active.c.day > first_week, active.c.day <= window.last_read)
        .group_by(cohort_of.c.cohort, active_week)
    )
    back: dict[tuple[date, date], int] = {
        (_as_date(row.cohort), _as_date(row.week)): int(row.users) for row in returning
    }
    cohorts = []
    week = first_week
    while week <= last_week:
        users = sizes.get(week, 0)
        retention: list[float | None] = []
        for k in range(1, RETENTION_WEEKS + 1):
            later = week + timedelta(weeks=k)
            over = later + timedelta(days=6) < window.today
            retention.append(back.get((week, later), 0) / users if over and users else None)
        cohorts.append(Cohort(week=week, users=users, retention=retention))
        week += timedelta(weeks=1)
    return cohorts


async def _memory(conn: AsyncConnection, now: datetime, hits: int, lookups: int) -> MemoryFigures:
    live = or_(MemoryRow.expires_at.is_(None), MemoryRow.expires_at > now)
    per_type = {
        str(row.memory_type): int(row.memories)
        for row in await conn.execute(
            select(MemoryRow.memory_type, func.count().label("memories"))
            .where(live)
            .group_by(MemoryRow.memory_type)
        )
    }
    users = int(
        (await conn.execute(select(func.count()).select_from(UserRow).where(~is_tombstone()))).scalar_one()
    )
    memories = sum(per_type.values())
    return MemoryFigures(
        memories=memories,
        users=users,
        memories_per_user=_ratio(memories, users),
        per_type=per_type,
        cache_hit_ratio=_ratio(hits, lookups),
    )


def _as_date(value: Any) -> date:
    """A date from the database: SQLite's date functions answer text."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


@dataclass
class _SampleTotals:
    operations: list[OperationQuality]
    probes: int = 0
    probes_failed: int = 0
    requests: int = 0
    requests_failed: int = 0
    cache_lookups: int = 0
    cache_hits: int = 0


async def sample_totals(conn: AsyncConnection, start: datetime, end: datetime) -> _SampleTotals:
    """Every process's counts of the minutes in [start, end), per kind and name."""
    rows = await conn.execute(
        select(
            ServiceSampleRow.kind,
            ServiceSampleRow.name,
            func.sum(ServiceSampleRow.total).label("total"),
            func.sum(ServiceSampleRow.failed).label("failed"),
            func.sum(ServiceSampleRow.refused).label("refused"),
        )
        .where(ServiceSampleRow.minute >= start, ServiceSampleRow.minute < end)
        .group_by(ServiceSampleRow.kind, ServiceSampleRow.name)
    )
    totals = _SampleTotals(operations=[])
    for row in rows:
        total, failed, refused = int(row.total), int(row.failed), int(row.refused)
        if row.kind == SampleKind.operation:
            totals.operations.append(
                OperationQuality(
                    operation=row.name, calls=total, failed=failed, refused=refused, error_rate=failed / total
                )
            )
        elif row.kind == SampleKind.probe:
            totals.probes += total
            totals.probes_failed += failed
        elif row.kind == SampleKind.http:
            totals.requests += total
            totals.requests_failed += failed
        elif row.kind == SampleKind.cache:
            totals.cache_lookups += total
            totals.cache_hits += total - failed
    totals.operations.sort(key=lambda operation: operation.operation)
    return totals
