"""What logging costs the hot paths: store_memory and add_message at concurrency 16 under each logging setup.

    make bench-logging   (or: .venv/bin/python bench/logging_cost.py [--ops 6000] [--rounds 3] [--no-write])

The setups, taking turns in slices on one throw-away PostgreSQL database: the library as installed (no handler: its
records go nowhere), JSON lines at INFO and at WARNING (what the CLI and the service configure: failures, retries and
slow calls only), and JSON lines at DEBUG (a line for every call, what every write logged before issue 12). The lines
go to /dev/null, so what is measured is building and formatting them, not a terminal. Writes the table into
docs/benchmarks.md. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import RESULTS, Spent, _timed, corpus_sentences, environment, write_section
from stratus_db import ConversationManager, Database, MemoryManager, UserManager
from stratus_db.logging import LOGGER_NAME, configure_json
from tests.fixtures.databases import settings_for, throwaway_postgres_database

SETUPS = ("no handler", "JSON at WARNING", "JSON at INFO", "JSON at DEBUG")
CONCURRENCY = 16


def _apply(setup: str, sink: TextIO) -> None:
    library = logging.getLogger(LOGGER_NAME)
    library.handlers[:] = [
        handler for handler in library.handlers if isinstance(handler, logging.NullHandler)
    ]
    library.setLevel(logging.NOTSET)
    if setup != "no handler":
        configure_json(setup.removeprefix("JSON at "), sink)


async def measure(ops: int, rounds: int, sink: TextIO) -> list[str]:
    sentences = corpus_sentences()
    async with throwaway_postgres_database() as url:
        db = Database(
            settings_for(url).model_copy(
                update={"STRATUS_POOL_SIZE": CONCURRENCY, "STRATUS_POOL_MAX_OVERFLOW": 0}
            )
        )
        try:
            users = [
                (await UserManager(db).create_user(f"Piloto {n}", f"piloto{n}@log.com.br", "pilot")).user_id
                for n in range(200)
            ]
            memories, conversations = MemoryManager(db), ConversationManager(db)
            chats = [await conversations.create_conversation(user, "Consulta") for user in users[:64]]

            def store(index: int) -> Awaitable[Any]:
                return memories.store_memory(
                    users[index % len(users)], f"chave_{index % 50}", sentences[index % len(sentences)]
                )

            def append(index: int) -> Awaitable[Any]:
                chat = chats[index % len(chats)]
                return conversations.add_message(
                    chat.conversation_id, chat.user_id, sentences[index % len(sentences)]
                )

            operations: dict[str, Callable[[int], Awaitable[Any]]] = {
                "store_memory": store,
                "add_message": append,
            }
            lines = [
                "| Operation, concurrency 16 | " + " | ".join(SETUPS) + " |",
                "|---|" + "---:|" * len(SETUPS),
            ]
            for name, call in operations.items():
                spent = {setup: Spent() for setup in SETUPS}
                await _timed(call, range(ops, ops + 4 * CONCURRENCY), CONCURRENCY, [])  # warm-up
                for round_number in range(rounds):
                    start, stop = ops * round_number // rounds, ops * (round_number + 1) // rounds
                    for setup in SETUPS:
                        _apply(setup, sink)
                        spent[setup] += await _timed(call, range(start, stop), CONCURRENCY, [])
                _apply("no handler", sink)
                base = spent["no handler"]
                cells = []
                for setup in SETUPS:
                    rate, cpu = ops / spent[setup].wall, spent[setup].client_cpu * 1e6 / ops
                    relative = (spent[setup].client_cpu / base.client_cpu - 1) * 100
                    cells.append(f"{rate:,.0f}/s, client {cpu:.0f} µs ({relative:+.1f} %)")
                    print(f"{name:<13} {setup:<16} {cells[-1]}", flush=True)
                lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
        finally:
            await db.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=6000, help="calls per setup and operation")
    parser.add_argument("--rounds", type=int, default=3, help="slices the setups take turns in")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    with open(os.devnull, "w") as sink:
        lines = asyncio.run(measure(arguments.ops, arguments.rounds, sink))
    if not arguments.no_write:
        write_section(
            "logging",
            [
                "Throughput and client CPU a call under each logging setup (the percentage: client CPU against no "
                "handler), `make bench-logging`:",
                "",
                *lines,
                "",
                environment(("structlog", "sqlalchemy", "asyncpg")),
            ],
        )
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
