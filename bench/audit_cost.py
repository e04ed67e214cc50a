"""What auditing costs add_message on PostgreSQL: the audit row itself, and the trigger that catches writes made
outside the library.

    make bench-audit   (or: .venv-bench/bin/python bench/audit_cost.py [--ops 6000] [--rounds 3] [--no-write])

One throw-away database, 100 users with a conversation each, appends at concurrency 16, the setups taking turns in
slices (each going first in turn):

- the library's `add_message`, against the same calls without any auditing: the audit row taken out of its
  statements (the `audited` step of `_PG_APPEND` and `_PG_APPEND_MANY`, swapped for one that writes nothing) and the
  outside-write trigger (revision 0011) disabled (`ALTER TABLE … DISABLE TRIGGER`); then against each of the two
  alone: what auditing costs `add_message` (issue 15's budget: at most 15 % of its throughput);
- the floor (bench/conversations.py `FLOOR_APPEND`: the message, the conversation's counters and the audit row as
  one statement on a raw asyncpg pool), against the same statement without its audit row: the audit row's cost
  without the library around it.

The floor's connections carry the library's application_name, so the trigger skips them as it skips the library's.
Writes the table into docs/benchmarks.md. Not a test: nothing here asserts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.conversations import FLOOR_APPEND, FLOOR_APPEND_UNAUDITED
from bench.harness import Spent, _timed, corpus_messages, driver_url, run_sliced
from stratus_db import ConversationManager, Database, UserManager
from stratus_db.audit.rows import AUDIT_INPUT
from stratus_db.conversations import repository
from stratus_db.kit.ids import new_id
from tests.fixtures.databases import settings_for, throwaway_postgres_database

CONCURRENCY = 16
USERS = 100
AUDITED_TABLES = ("messages", "conversations")
"""The tables an append writes: the trigger is disabled on both for the `trigger off` setup."""


class Setup(NamedTuple):
    name: str
    library: bool
    audit_row: bool = True
    trigger: bool = True


AUDITED = Setup("add_message", library=True)
NO_AUDIT_ROW = Setup("add_message, without its audit row", library=True, audit_row=False)
NO_TRIGGER = Setup("add_message, outside-write trigger off", library=True, trigger=False)
UNAUDITED = Setup("add_message, neither", library=True, audit_row=False, trigger=False)
FLOOR = Setup("floor, with its audit row", library=False)
FLOOR_UNAUDITED = Setup("floor, without an audit row", library=False, audit_row=False)
SETUPS = (AUDITED, NO_AUDIT_ROW, NO_TRIGGER, UNAUDITED, FLOOR, FLOOR_UNAUDITED)
COMPARED = (
    ("all of auditing (`add_message`)", AUDITED, UNAUDITED),
    ("the audit row (`add_message`)", AUDITED, NO_AUDIT_ROW),
    ("the outside-write trigger (`add_message`)", AUDITED, NO_TRIGGER),
    ("the audit row (floor statement)", FLOOR, FLOOR_UNAUDITED),
)


@contextmanager
def unaudited_appends(enabled: bool) -> Iterator[None]:
    """While enabled, the library's append statements write no audit row: their `audited` step selects the audit
    parameters (so that the statement's parameters stay the same) and writes nothing."""
    if not enabled:
        yield
        return
    single, many = repository._PG_APPEND, repository._PG_APPEND_MANY
    typed = ", ".join(
        f"{repository._APPEND_INPUT.parameter(name)}::{kind}" for name, kind in AUDIT_INPUT.columns
    )
    repository._PG_APPEND = single.replace(repository._APPEND_AUDITED, f"SELECT {typed}")
    repository._PG_APPEND_MANY = many.replace(repository._APPEND_MANY_AUDITED, "SELECT 1")
    try:
        yield
    finally:
        repository._PG_APPEND, repository._PG_APPEND_MANY = single, many


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

            def call(setup: Setup) -> Callable[[int], Awaitable[Any]]:
                if setup.library:
                    return library
                return floor(FLOOR_APPEND if setup.audit_row else FLOOR_APPEND_UNAUDITED)

            async def triggers(enabled: bool) -> None:
                for table in AUDITED_TABLES:
                    await pool.execute(
                        f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER audit_outside_write"
                    )

            async def run(setup: Setup, indexes: range) -> Spent:
                if not setup.trigger:
                    await triggers(enabled=False)
                try:
                    with unaudited_appends(setup.library and not setup.audit_row):
                        return await _timed(call(setup), indexes, CONCURRENCY, [])
                finally:
                    if not setup.trigger:
                        await triggers(enabled=True)

            spent = {setup: Spent() for setup in SETUPS}
            for setup in SETUPS:  # warm-up: pools, prepared statements
                await run(setup, range(400))
            order = list(SETUPS)
            for round_number in range(rounds):
                start, stop = ops * round_number // rounds, ops * (round_number + 1) // rounds
                order = order[1:] + order[:1]
                for setup in order:
                    spent[setup] += await run(setup, range(start, stop))
        finally:
            await pool.close()
            await db.close()

    def cell(setup: Setup) -> str:
        used = spent[setup]
        return (
            f"{ops / used.wall:,.0f}/s, client {used.client_cpu * 1e6 / ops:.0f} µs, "
            f"server {used.server_cpu * 1e6 / ops:.0f} µs"
        )

    lines = [
        "| Append, concurrency 16 | with | without | throughput, with ÷ without | server CPU, with ÷ without |",
        "|---|---:|---:|---:|---:|",
    ]
    for what, with_, without in COMPARED:
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
            "What auditing costs an append: the audit row (in the library's `add_message`, and in the raw asyncpg "
            "floor statement), and the trigger that audits writes made outside the library, each against the same "
            "writes without it, interleaved in one run, `make bench-audit`:"
        ),
        packages=("sqlalchemy", "asyncpg"),
        default_ops=6000,
        ops_help="appends per setup",
    )


if __name__ == "__main__":
    main()
