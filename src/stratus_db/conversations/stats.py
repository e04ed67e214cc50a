"""Usage statistics, computed by the database (GROUP BY and window functions), never by loading rows.

The statements are plain Core and run unchanged on both backends; the one dialect difference, the UTC day of a
timestamp, is kit/sql.py's `utc_day`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db.conversations.schemas import AgentUsage, DailyUsage
from stratus_db.kit.sql import utc_day
from stratus_db.models import ConversationRow, MessageRow, MessageType

PERCENTILE_NUMERATOR, PERCENTILE_DENOMINATOR = 19, 20
"""The 95th percentile as an exact fraction, so that rank arithmetic stays in integers on both backends."""


@dataclass(frozen=True)
class Scope:
    """Which rows the statistics cover: one user's or everyone's, one conversation's, a time range [since, until)."""

    user_id: uuid.UUID | None = None
    conversation_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None

    def _where(self, model: type[MessageRow] | type[ConversationRow]) -> ColumnElement[bool]:
        conditions: list[ColumnElement[bool]] = []
        if self.user_id is not None:
            conditions.append(model.user_id == self.user_id)
        if self.conversation_id is not None:
            conditions.append(model.conversation_id == self.conversation_id)
        if self.since is not None:
            conditions.append(model.created_at >= self.since)
        if self.until is not None:
            conditions.append(model.created_at < self.until)
        return and_(true(), *conditions)

    @property
    def messages(self) -> ColumnElement[bool]:
        return self._where(MessageRow)

    @property
    def conversations(self) -> ColumnElement[bool]:
        return self._where(ConversationRow)


async def daily_usage(conn: AsyncConnection, scope: Scope) -> list[DailyUsage]:
    """Messages, tokens and conversations started per UTC day, oldest day first."""
    message_day = utc_day(MessageRow.created_at).label("day")
    messages = await conn.execute(
        select(message_day, func.count().label("messages"), func.sum(MessageRow.tokens_used).label("tokens"))
        .where(scope.messages)
        .group_by(message_day)
    )
    conversation_day = utc_day(ConversationRow.created_at).label("day")
    conversations = await conn.execute(
        select(conversation_day, func.count().label("conversations"))
        .where(scope.conversations)
        .group_by(conversation_day)
    )
    days: dict[Any, dict[str, int]] = {}
    for row in messages:
        days.setdefault(row.day, {}).update(messages=row.messages, tokens=int(row.tokens))
    for day, started in conversations:
        days.setdefault(day, {})["conversations"] = started
    return [
        DailyUsage(
            day=day,
            conversations=counts.get("conversations", 0),
            messages=counts.get("messages", 0),
            tokens=counts.get("tokens", 0),
        )
        for day, counts in sorted(days.items())
    ]


async def agent_usage(conn: AsyncConnection, scope: Scope) -> list[AgentUsage]:
    """Messages, tokens, average and 95th-percentile response time per agent (None: messages of no agent)."""
    volume = await conn.execute(
        select(
            MessageRow.agent_name,
            func.count().label("messages"),
            func.sum(MessageRow.tokens_used).label("tokens"),
        )
        .where(scope.messages)
        .group_by(MessageRow.agent_name)
    )
    # percentile_cont(0.95) by hand, as SQLite has none: with the n times of an agent sorted, the percentile lies
    # at 0-based position p = 0.95 (n - 1) = lower + fraction; interpolate between the times at lower and lower + 1.
    timed = (
        select(
            MessageRow.agent_name,
            MessageRow.response_time,
            func.row_number()
            .over(partition_by=MessageRow.agent_name, order_by=MessageRow.response_time)
            .label("rank"),
            func.count().over(partition_by=MessageRow.agent_name).label("n"),
        )
        .where(scope.messages, MessageRow.response_time.is_not(None))
        .subquery("timed")
    )
    scaled = PERCENTILE_NUMERATOR * (timed.c.n - 1)
    lower = scaled.op("/")(PERCENTILE_DENOMINATOR)  # integer division on both backends
    fraction = scaled.op("%")(PERCENTILE_DENOMINATOR) / float(PERCENTILE_DENOMINATOR)
    p95 = func.sum(
        case(
            (timed.c.rank == lower + 1, timed.c.response_time * (1 - fraction)),
            (timed.c.rank == lower + 2, timed.c.response_time * fraction),
            else_=0.0,
        )
    )
    times = await conn.execute(
        select(
            timed.c.agent_name,
            func.avg(timed.c.response_time).label("average"),
            p95.label("p95"),
        ).group_by(timed.c.agent_name)
    )
    timing = {row.agent_name: (float(row.average), float(row.p95)) for row in times}
    usage = [
        AgentUsage(
            agent_name=row.agent_name,
            messages=row.messages,
            tokens=int(row.tokens),
            average_response_time=timing.get(row.agent_name, (None, None))[0],
            p95_response_time=timing.get(row.agent_name, (None, None))[1],
        )
        for row in volume
    ]
    return sorted(usage, key=lambda item: (item.agent_name is not None, item.agent_name or ""))


async def type_usage(conn: AsyncConnection, scope: Scope) -> dict[MessageType, int]:
    """Messages per type (every type present, 0 when none)."""
    rows = await conn.execute(
        select(MessageRow.message_type, func.count().label("messages"))
        .where(scope.messages)
        .group_by(MessageRow.message_type)
    )
    counts = dict.fromkeys(MessageType, 0)
    counts.update({MessageType(row.message_type): row.messages for row in rows})
    return counts


async def message_span(conn: AsyncConnection, scope: Scope) -> tuple[datetime | None, datetime | None]:
    """The first and the last message's time."""
    row = (
        await conn.execute(
            select(func.min(MessageRow.created_at), func.max(MessageRow.created_at)).where(scope.messages)
        )
    ).one()
    return row[0], row[1]
