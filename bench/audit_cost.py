"""What auditing costs add_message on PostgreSQL: the audit row itself, and the trigger that catches writes made
outside the library.

    make bench-audit   (or: .venv-bench/bin/python bench/audit_cost.py [--ops 6000] [--rounds 3] [--no-write])

One throw-away database, 100 users with a conversation each, appends at concurrency 16, the setups taking turns in
slices (each going first in turn):

- the floor (bench/conversations.py `FLOOR_APPEND`: the message, the conversation's counters and the audit row as
  one statement on a raw asyncpg pool), against the same statement without its audit row: what the audit row costs
  the write itself;
- the library's `add_message` with the outside-write trigger (revision 0011) enabled, against the same with it
  disabled (`ALTER TABLE … DISABLE TRIGGER`): what the trigger's WHEN clause costs the library's writes.

The floor's connections carry the library's application_name, so the trigger skips them as it skips the library's.
Writes the table into docs/benchmarks.md. Not a test: nothing here asserts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.conversations import FLOOR_APPEND, FLOOR_APPEND_UNAUDITED
from bench.harness import Spent, _timed, corpus_messages, driver_url, run_sliced
from stratus_db import ConversationManager, Database, UserManager
from stratus_db.kit.ids import new_id
from tests.fixtures.databases import settings_for, throwaway_postgres_database

CONCURRENCY = 16
USERS = 100
AUDITED_TABLES = ("messages", "conversations")
"""The tables an append writes: the trigger is disabled on both for the `trigger off` setup."""
SETUPS = (
    "floor, with its audit row",
    "floor, without an audit row",
    "add_message, outside-write trigger on",
    "add_message, outside-write trigger off",
)


async def measure(ops: int, rounds: int) -> list[str]:
    corpus = corpus_messages()
    async with throwaway_postgres_database() as url:
        db = Database(
            settings_for(url).model_copy(
                update={"STRATUS_POOL_SIZE": CONCURRENCY, "STRATUS_POOL_MAX_OVERFLOW": 0}
            )
        )
        pool = await asyncpg.create_pool(
            driver_url(url),
            min_size=CONCURRENCY,
            max_size=CONCURRENCY,
            server_settings={"application_name": "stratus_db"},
        )
        try:
            users, conversations = UserManager(db), ConversationManager(db)
            owners = []
            for n in range(USERS):
                user = await users.create_user(f"Piloto {n}", f"piloto{n}@auditoria.com.br", "pilot")
                chat = await conversations.create_conversation(user.user_id, f"Conversa {n}")
                owners.append((chat.conversation_id, user.user_id))

            def floor(statement: str) -> Callable[[int], Awaitable[Any]]:
                async def append(index: int) -> None:
                    (conversation_id, user_id), message = owners[index % USERS], corpus[index % len(corpus)]
                    message_id = new_id()
                    values = {
                        "conversation_id": str(conversation_id),
                        "message_type": message["message_type"],
                    }
                    await pool.fetchrow(
                        statement, message_id, conversation_id, user_id, message["agent_name"],
                        message["message_type"], message["content"], json.dumps({"canal": "web"}),
                        message["tokens_used"], message["response_time"], datetime.now(UTC), new_id(),
                        json.dumps(values),
                    )  # fmt: skip

                return append

            async def library(index: int) -> None:
                (conversation_id, user_id), message = owners[index % USERS], corpus[index % len(corpus)]
                await conversations.add_message(
                    conversation_id,
                    user_id,
                    message["content"],
                    message["message_type"],
                    agent_name=message["agent_name"],
                    tokens_used=message["tokens_used"],
                )

            calls = {
                SETUPS[0]: floor(FLOOR_APPEND),
                SETUPS[1]: floor(FLOOR_APPEND_UNAUDITED),
                SETUPS[2]: library,
                SETUPS[3]: library,
            }

            async def triggers(enabled: bool) -> None:
                for table in AUDITED_TABLES:
                    await pool.execute(
                        f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER audit_outside_write"
                    )

            spent = {setup: Spent() for setup in SETUPS}
            for setup in SETUPS:  # warm-up: pools, prepared statements
                await _timed(calls[setup], range(400), CONCURRENCY, [])
            order = list(SETUPS)
            for round_number in range(rounds):
                start, stop = ops * round_number // rounds, ops * (round_number + 1) // rounds
                order = order[1:] + order[:1]
                for setup in order:
                    if setup == SETUPS[3]:
                        await triggers(enabled=False)
                    spent[setup] += await _timed(calls[setup], range(start, stop), CONCURRENCY, [])
                    if setup == SETUPS[3]:
                        await triggers(enabled=True)
        finally:
            await pool.close()
            await db.close()

    def cell(setup: str) -> str:
        used = spent[setup]
        return (
            f"{ops / used.wall:,.0f}/s, client {used.client_cpu * 1e6 / ops:.0f} µs, "
            f"server {used.server_cpu * 1e6 / ops:.0f} µs"
        )

    lines = [
        "| Append, concurrency 16 | with | without | throughput, with ÷ without | server CPU, with ÷ without |",
        "|---|---:|---:|---:|---:|",
    ]
    for what, with_, without in (
        ("the audit row (floor statement)", SETUPS[0], SETUPS[1]),
        ("the outside-write trigger (`add_message`)", SETUPS[2], SETUPS[3]),
    ):
        a, b = spent[with_], spent[without]
        lines.append(
            f"| {what} | {cell(with_)} | {cell(without)} | {b.wall / a.wall:.2f} | "
            f"{a.server_cpu / b.server_cpu:.2f} |"
        )
    for line in lines:
        print(line, flush=True)
    return lines


def main() -> None:
    run_sliced(
        __doc__,
        measure,
        section="audit",
        intro=(
            "What auditing costs an append: the audit row, and the trigger that audits writes made outside "
            "the library, each against the same writes without it, interleaved in one run, `make bench-audit`:"
        ),
        packages=("sqlalchemy", "asyncpg"),
        default_ops=6000,
        ops_help="appends per setup",
    )


if __name__ == "__main__":
    main()
