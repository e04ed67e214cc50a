"""What following users' activity costs the hot paths: store_memory, get_memory and add_message with `last_active`
tracked (as shipped) and with the tracker switched off, at concurrency 16 on one throw-away PostgreSQL database.

    make bench-activity   (or: .venv/bin/python bench/activity_cost.py [--ops 6000] [--rounds 3] [--no-write])

One handle, the two setups taking turns in slices: as shipped (each call notes its user, and a background task writes
`last_active` at most once a minute per user), and with the tracker's `note` replaced by one that does nothing. 200 users, so over a
run most calls find their user's minute not yet passed (one dict lookup) and a few hand a write to the background.
Writes the table into docs/benchmarks.md. Not a test: nothing here asserts.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    Contender,
    compare,
    corpus_sentences,
    results_table,
    run_sliced,
)
from stratus_db import ConversationManager, Database, MemoryManager, UserManager
from stratus_db.users.activity import tracker_of
from tests.fixtures.databases import settings_for, throwaway_postgres_database

CONCURRENCY = 16
USERS = 200
Call = Callable[[int], Awaitable[Any]]


def _ignore(user_id: uuid.UUID) -> None:
    """The tracker's `note` when activity is not followed."""


async def measure(ops: int, rounds: int) -> list[str]:
    sentences = corpus_sentences()
    async with throwaway_postgres_database() as url:
        settings = settings_for(url).model_copy(
            update={"STRATUS_POOL_SIZE": CONCURRENCY, "STRATUS_POOL_MAX_OVERFLOW": 0}
        )
        db = Database(settings)
        tracker = tracker_of(db)
        shipped = tracker.note
        try:
            users = [
                (await UserManager(db).create_user(f"Piloto {n}", f"piloto{n}@ativo.com.br", "pilot")).user_id
                for n in range(USERS)
            ]
            memories, conversations = MemoryManager(db), ConversationManager(db)
            chats = [await conversations.create_conversation(user, "Consulta") for user in users]
            # Long-term: a short-term memory read often is promoted, a write that empties the cache mid-run.
            for index, user in enumerate(users):
                await memories.store_memory(user, "aeronave", sentences[index % len(sentences)], "long_term")

            def store(index: int) -> Awaitable[Any]:
                return memories.store_memory(
                    users[index % USERS], f"chave_{index % 50}", sentences[index % len(sentences)]
                )

            def read(index: int) -> Awaitable[Any]:
                return memories.get_memory(users[index % USERS], "aeronave")

            def append(index: int) -> Awaitable[Any]:
                chat = chats[index % USERS]
                return conversations.add_message(
                    chat.conversation_id, chat.user_id, sentences[index % len(sentences)]
                )

            def with_tracking(call: Call, note: Callable[[uuid.UUID], None]) -> Call:
                # The setups take turns in whole slices (bench.harness.compare), so setting the tracker's `note`
                # before each call switches it for the slice; one attribute store is noise next to a call.
                def tracked_call(index: int) -> Awaitable[Any]:
                    tracker.note = note  # type: ignore[method-assign]
                    return call(index)

                return tracked_call

            contenders = [
                Contender(label, operation, with_tracking(call, note))
                for operation, call in (
                    ("store_memory", store),
                    ("get_memory", read),
                    ("add_message", append),
                )
                for label, note in (("activity tracked", shipped), ("activity off", _ignore))
            ]
            results = []
            for operation in ("store_memory", "get_memory", "add_message"):
                pair = [c for c in contenders if c.operation == operation]
                results += await compare(pair, ops, CONCURRENCY, rounds=rounds, warmup=2 * USERS)
            lines = results_table(results)
            for operation in ("store_memory", "get_memory", "add_message"):
                on, off = (r for r in results if r.operation == operation)
                lines.append(
                    f"\n`{operation}`: tracked/off throughput {on.throughput / off.throughput:.2f}, "
                    f"client CPU a call {on.client_cpu_us - off.client_cpu_us:+.1f} µs"
                )
            print("\n".join(lines[-3:]), flush=True)
            lines.append(f"\n`last_active` writes (users): {tracker.writes}")
        finally:
            tracker.note = shipped  # type: ignore[method-assign]
            await db.close()
    return lines


def main() -> None:
    run_sliced(
        __doc__,
        measure,
        section="activity",
        intro=(
            "What following `last_active` costs the hot paths (issue 13): the same calls through a handle whose "
            "tracker notes each user and one whose tracker is off, taking turns, `make bench-activity`:"
        ),
        packages=("sqlalchemy", "asyncpg"),
        default_ops=6000,
        ops_help="calls per setup and operation",
    )


if __name__ == "__main__":
    main()
