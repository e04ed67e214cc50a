"""What one append statement costs PostgreSQL, by batch size, with and without the full-text index of messages.

    .venv/bin/python bench/append_statement.py [--statements 4800] [--no-write]

Sends the statement the append coalescer sends (conversations/repository.py `appends_statement`: the one-message
statement for a lone append, the batch statement for more) on one asyncpg connection, in batches of 1 to 32 appends
to distinct conversations of a throw-away database, and reads PostgreSQL's CPU time from /proc before and after each
size: only the server's work is counted. The connection uses generic plans (plan_cache_mode = force_generic_plan),
as a pooled connection settles on for the batch statement, so planning is not counted either. Then the same again
with the messages' full-text trigger disabled and their GIN index dropped. A least-squares line through the sizes
splits the cost into a part per statement and a part per message. Writes the table between the `append-statement`
markers of docs/benchmarks.md. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.conversations import WITHOUT_MESSAGE_SEARCH, Owned, seed_conversations
from bench.harness import (
    RESULTS,
    ROOT,
    corpus_messages,
    driver_url,
    environment,
    seed_users,
    server_cpu_seconds,
    server_cpu_since,
    write_section,
)
from stratus_db.audit.rows import AuditContext, AuditEntry
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations.plans import NewMessage
from stratus_db.conversations.repository import appends_statement
from stratus_db.kit.ids import new_id
from stratus_db.models import MessageType
from tests.fixtures.databases import throwaway_postgres_database

SIZES = (1, 2, 4, 8, 16, 32)
USERS = 1000
CONVERSATIONS_PER_USER = 3


def append(owner: Owned, message: dict[str, Any]) -> tuple[NewMessage, AuditEntry]:
    """One append as the coalescer queues it: the message with its owner, and its audit entry."""
    message_id, now = new_id(), datetime.now(UTC)
    return (
        NewMessage(
            message_id=message_id,
            conversation_id=owner.conversation_id,
            user_id=owner.user_id,
            agent_name=message["agent_name"],
            message_type=MessageType(message["message_type"]),
            content=message["content"],
            metadata={"canal": "web"},
            tokens_used=message["tokens_used"],
            response_time=message["response_time"],
            created_at=now,
        ),
        AuditEntry(
            action=AuditAction.create,
            table_name="messages",
            record_id=message_id,
            user_id=owner.user_id,
            timestamp=now,
            old_values=None,
            new_values={
                "conversation_id": str(owner.conversation_id),
                "content_chars": len(message["content"]),
            },
            context=AuditContext(None, None, "system:bench", str(message_id), None),
            audit_id=new_id(),
        ),
    )


async def cost_by_size(
    connection: asyncpg.Connection, chats: list[Owned], corpus: list[dict[str, Any]], statements: int
) -> dict[int, float]:
    """Server CPU microseconds per statement, for each batch size."""
    rng = random.Random(5)
    cost: dict[int, float] = {}
    for size in SIZES:
        # Ten more first: they prepare the statement and settle its plan.
        batches = [
            appends_statement([append(owner, rng.choice(corpus)) for owner in rng.sample(chats, size)])
            for _ in range(10 + max(50, statements // size))
        ]
        for sql, arguments in batches[:10]:
            await connection.fetch(sql, *arguments)
        repetitions = len(batches) - 10
        before = server_cpu_seconds()
        for sql, arguments in batches[10:]:
            await connection.fetch(sql, *arguments)
        cost[size] = server_cpu_since(before) * 1e6 / repetitions
        print(f"  {size:2} appends: {cost[size]:6.0f} µs a statement, {cost[size] / size:4.0f} µs a message")
    return cost


def fit(cost: dict[int, float]) -> tuple[float, float]:
    """(µs a statement, µs a message): the least-squares line through the sizes."""
    sizes, costs = list(cost), list(cost.values())
    mean_size, mean_cost = sum(sizes) / len(sizes), sum(costs) / len(costs)
    per_message = sum((s - mean_size) * (c - mean_cost) for s, c in zip(sizes, costs, strict=True)) / sum(
        (s - mean_size) ** 2 for s in sizes
    )
    return mean_cost - per_message * mean_size, per_message


async def run(statements: int) -> tuple[dict[int, float], dict[int, float]]:
    corpus = corpus_messages()
    async with throwaway_postgres_database() as url:
        connection = await asyncpg.connect(driver_url(url))
        try:
            users = [new_id() for _ in range(USERS)]
            chats = [Owned(new_id(), user) for user in users for _ in range(CONVERSATIONS_PER_USER)]
            await seed_users(connection, users)
            await seed_conversations(connection, chats)
            await connection.execute("ANALYZE")
            await connection.execute("SET plan_cache_mode = force_generic_plan")
            print("with messages indexed for full-text search:")
            indexed = await cost_by_size(connection, chats, corpus, statements)
            for statement in WITHOUT_MESSAGE_SEARCH:
                await connection.execute(statement)
            print("without:")
            unindexed = await cost_by_size(connection, chats, corpus, statements)
        finally:
            await connection.close()
    return indexed, unindexed


def table(indexed: dict[int, float], unindexed: dict[int, float]) -> list[str]:
    rows = [
        "| Appends a statement | µs a statement | µs a message | without full text: µs a statement | µs a message |",
        "|---:|---:|---:|---:|---:|",
    ]
    rows += [
        f"| {size} | {indexed[size]:,.0f} | {indexed[size] / size:,.0f} | {unindexed[size]:,.0f} | "
        f"{unindexed[size] / size:,.0f} |"
        for size in SIZES
    ]
    (fixed, marginal), (fixed_plain, marginal_plain) = fit(indexed), fit(unindexed)
    rows.append(
        f"| fitted line | {fixed:,.0f} + | {marginal:,.0f} a message | {fixed_plain:,.0f} + | "
        f"{marginal_plain:,.0f} a message |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--statements",
        type=int,
        default=4800,
        help="appends measured per batch size (at least 50 statements)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    indexed, unindexed = asyncio.run(run(arguments.statements))
    rows = table(indexed, unindexed)
    print("\n".join(rows))
    if not arguments.no_write:
        write_section(
            "append-statement",
            [
                "## What an append statement costs the server (`bench/append_statement.py`)",
                "",
                f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {environment(('asyncpg',))}. PostgreSQL CPU (all its "
                "processes, from /proc) for the statement the append coalescer sends, by the number of appends it "
                "carries (each to another conversation), on one connection with generic plans; then with the "
                "messages' full-text trigger and GIN index removed. No client work is counted.",
                "",
                *rows,
            ],
        )
        print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
