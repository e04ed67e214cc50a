"""The metrics report (docs/metrics.md) at the benchmarks' scale: 1,000 users and 1,000,000 messages over 90 days on
PostgreSQL, counted from the messages and from the daily rollups, against the spec's target of under a second.

    make bench-metrics   (or: .venv-bench/bin/python bench/metrics.py [--ops 5] [--rounds 1] [--no-write])

One throw-away database. Users, conversations and messages are written with COPY (on a connection that carries the
library's application_name, so the outside-write trigger lets the fixture through); then ANALYZE, as autovacuum is
off here. Each setup is timed `--ops` times, one report at a time; the median is quoted. The anchor is the floor
any report pays: one hand-written asyncpg statement counting the daily active users of the range from the messages.
No peer library computes these figures (LangSmith's and Langfuse's dashboards are services), so none is measured.
Not a test: nothing here asserts.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    corpus_sentences,
    driver_url,
    run_sliced,
    seed_users,
)
from stratus_db import AnalyticsManager, Database, Principal, PrincipalKind
from stratus_db.kit.ids import new_id
from tests.fixtures.databases import settings_for, throwaway_postgres_database

USERS = 1_000
CONVERSATIONS_PER_USER = 50
MESSAGES_PER_CONVERSATION = 20
DAYS = 90
AGENTS = ("meteorologia", "regulamentacao", "planejamento_voo", "manutencao", "instrucao", "geral")
ROLES = ("pilot", "student", "instructor", "mechanic", "dispatcher")
AUDITOR = Principal(kind=PrincipalKind.auditor, id="bench")
BATCH = 50_000

FLOOR = """
SELECT day, count(DISTINCT user_id) FROM (
    SELECT CAST(timezone('America/Sao_Paulo', created_at) AS DATE) AS day, user_id
    FROM messages WHERE message_type = 'user_input' AND created_at >= $1 AND created_at < $2
) AS written GROUP BY day
"""


async def seed(url: str, today: date) -> int:
    """The users, their conversations and the messages, spread over the DAYS days before today (UTC−3)."""
    rng = random.Random(20261207)
    sentences = corpus_sentences()
    users = [new_id() for _ in range(USERS)]
    start = datetime.combine(today - timedelta(days=DAYS), datetime.min.time(), UTC) + timedelta(hours=3)
    connection = await asyncpg.connect(driver_url(url), server_settings={"application_name": "stratus_db"})
    written = 0
    try:
        await seed_users(connection, users)
        await connection.execute(
            "UPDATE users SET role = (ARRAY['pilot','student','instructor','mechanic','dispatcher'])[1 + abs(hashtext(user_id::text)) % 5],"
            " created_at = $1::timestamptz - (abs(hashtext(user_id::text)) % 60) * interval '1 day'",
            start,
        )
        conversations: list[tuple[Any, ...]] = []
        messages: list[tuple[Any, ...]] = []
        for user in users:
            for _ in range(CONVERSATIONS_PER_USER):
                conversation = new_id()
                began = start + timedelta(seconds=rng.randrange(DAYS * 86_400 - 3_600))
                tokens = 0
                for seq in range(1, MESSAGES_PER_CONVERSATION + 1):
                    answering = seq % 2 == 0
                    agent = rng.choice(AGENTS) if answering else None
                    used = rng.randrange(20, 400)
                    tokens += used
                    messages.append(
                        (
                            new_id(), conversation, user, seq, agent,
                            "agent_response" if answering else "user_input",
                            rng.choice(sentences), None, "{}", used,
                            round(rng.lognormvariate(0.8, 0.6), 3) if answering else None,
                            began + timedelta(seconds=seq * 40),
                        )
                    )  # fmt: skip
                conversations.append(
                    (conversation, user, "Conversa", "active", "{}", None, 0, MESSAGES_PER_CONVERSATION, tokens,
                     began, began, began + timedelta(seconds=MESSAGES_PER_CONVERSATION * 40))
                )  # fmt: skip
                if len(messages) >= BATCH:
                    written += await _copy(connection, conversations, messages)
                    conversations, messages = [], []
                    print(f"seeded {written:,} messages", flush=True)
        written += await _copy(connection, conversations, messages)
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return written


async def _copy(connection: asyncpg.Connection, conversations: list[Any], messages: list[Any]) -> int:
    await connection.copy_records_to_table(
        "conversations", records=conversations, columns=CONVERSATION_COLUMNS
    )
    await connection.copy_records_to_table("messages", records=messages, columns=MESSAGE_COLUMNS)
    return len(messages)


async def median_ms(call: Callable[[], Awaitable[Any]], times: int) -> tuple[float, float]:
    """The median and the slowest of `times` calls, in milliseconds (one warm-up call first, not counted)."""
    await call()
    spent = []
    for _ in range(times):
        began = time.perf_counter()
        await call()
        spent.append((time.perf_counter() - began) * 1000)
    return statistics.median(spent), max(spent)


async def measure(ops: int, _rounds: int) -> list[str]:
    today = datetime.now(UTC).date()
    async with throwaway_postgres_database() as url:
        began = time.perf_counter()
        written = await seed(url, today)
        print(f"seeded {written:,} messages in {time.perf_counter() - began:.0f} s", flush=True)
        db = Database(settings_for(url).model_copy(update={"STRATUS_METRICS_FLUSH_S": 0}))
        analytics = AnalyticsManager(db)
        local_today = analytics.today()
        month = (local_today - timedelta(days=30), local_today - timedelta(days=1))
        quarter = (local_today - timedelta(days=DAYS), local_today - timedelta(days=1))
        floor = await asyncpg.connect(driver_url(url))
        rows: list[tuple[str, tuple[float, float]]] = []
        try:
            for label, (since, until) in (("30 days", month), ("90 days", quarter)):
                start = datetime.combine(since, datetime.min.time(), UTC) + timedelta(hours=3)
                end = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC) + timedelta(
                    hours=3
                )
                rows.append(
                    (f"anchor: raw asyncpg, DAU per day only, {label}", await median_ms(
                        lambda s=start, e=end: floor.fetch(FLOOR, s, e), ops))
                )  # fmt: skip
                rows.append(
                    (f"report from the messages, {label}", await median_ms(
                        lambda s=since, u=until: analytics.report(s, u, principal=AUDITOR), ops))
                )  # fmt: skip
            began = time.perf_counter()
            outcome = await analytics.rollup(principal=Principal.system("bench"))
            rollup_s = time.perf_counter() - began
            async with db.transaction() as conn:
                for table in ("activity_daily", "response_time_daily"):
                    await conn.exec_driver_sql(f"ANALYZE {table}")
            for label, (since, until) in (("30 days", month), ("90 days", quarter)):
                rows.append(
                    (f"report from the rollups, {label}", await median_ms(
                        lambda s=since, u=until: analytics.report(s, u, principal=AUDITOR), ops))
                )  # fmt: skip
            rows.append(
                ("report from the rollups, 30 days, one agent", await median_ms(
                    lambda: analytics.report(*month, agent="meteorologia", principal=AUDITOR), ops))
            )  # fmt: skip
            rows.append(("current figures (the /metrics gauges)", await median_ms(
                lambda: analytics.current(principal=AUDITOR), ops)))  # fmt: skip
            async with db.transaction() as conn:
                rolled_rows = (await conn.exec_driver_sql("SELECT count(*) FROM activity_daily")).scalar_one()
        finally:
            await floor.close()
            await db.close()
    lines = [
        f"{USERS:,} users, {written:,} messages over {DAYS} days; the rollup job took {rollup_s:.1f} s for "
        f"{outcome.days_rolled} days ({rolled_rows:,} rows of activity_daily). Median and slowest of {ops} reports "
        "each, one at a time; target: every report under a second.",
        "",
        "| Setup | median | slowest |",
        "|---|---:|---:|",
        *(f"| {label} | {median:,.0f} ms | {slowest:,.0f} ms |" for label, (median, slowest) in rows),
    ]
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    run_sliced(
        __doc__,
        measure,
        section="metrics",
        intro="The metrics report on PostgreSQL, from the messages and from the rollups (`make bench-metrics`):",
        packages=("sqlalchemy", "asyncpg"),
        default_ops=5,
        ops_help="reports timed per setup",
    )


if __name__ == "__main__":
    main()
