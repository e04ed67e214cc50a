"""Soak under connection loss: mixed calls from several tasks while the server ends the pool's connections.

    .venv/bin/python bench/soak.py [--seconds 60] [--tasks 8] [--every 0.25] [--no-write]

A throw-away PostgreSQL database, one user with memories and conversations. TASKS tasks call get_memory,
store_memory, search_memories, get_context and add_message (a message id of the caller's own, so that an append
whose outcome is unknown can be checked) for SECONDS, while another connection ends every session of that database
(`pg_terminate_backend`) every EVERY seconds. Reported: calls, typed failures by error, untyped failures (must be
0), acknowledged writes lost (must be 0: every acknowledged append is stored once, and every acknowledged store's
value or a later one is what the key holds), and the time from each termination to the first call that started
after it and succeeded. Written into docs/operations.md. Not a test: nothing here asserts, it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import ROOT, driver_url, environment, server_version
from stratus_db import ConversationManager, Database, MemoryManager, StratusError, UserManager
from stratus_db.kit.ids import new_id
from tests.fixtures.databases import settings_for, throwaway_postgres_database

OPERATIONS_DOC = ROOT / "docs" / "operations.md"
PACKAGES = ("sqlalchemy", "asyncpg")
KEYS_PER_TASK = 5
"""Each task stores only keys of its own, so that the last store it saw acknowledged is what the key must hold (or
a later one of the same task whose outcome was unknown)."""


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    typed: Counter[str] = field(default_factory=Counter)
    untyped: Counter[str] = field(default_factory=Counter)
    appended: list[uuid.UUID] = field(default_factory=list)
    unknown_appends: list[uuid.UUID] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)
    """The version last acknowledged under each key (versions only grow)."""
    successes: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) of every successful call, in time.monotonic()."""


async def soak(seconds: float, tasks: int, every: float) -> tuple[Tally, list[float], int, str]:
    async with throwaway_postgres_database() as url:
        server = await server_version(url)
        # The cache is off: every read reaches the pool, where the connections are being ended.
        db = Database(settings_for(url).model_copy(update={"STRATUS_MEMORY_CACHE_MAX_ENTRIES": 0}))
        users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
        user = await users.create_user(name="Ana Lima", email="ana.lima@aeroclube.com.br", role="pilot")
        for task in range(tasks):
            for number in range(KEYS_PER_TASK):
                await memories.store_memory(
                    user.user_id, f"k{task}.{number}", {"version": 0, "texto": "METAR SBGR"}
                )
        conversation_ids = [
            (await conversations.create_conversation(user_id=user.user_id, title=f"voo {n}")).conversation_id
            for n in range(4)
        ]
        tally = Tally()
        version = iter(range(1, 10**9))
        ends = time.monotonic() + seconds

        async def call_once(task: int, rng: random.Random) -> None:
            operation = rng.choice(
                ("get_memory", "store_memory", "search_memories", "get_context", "add_message")
            )
            key = f"k{task}.{rng.randrange(KEYS_PER_TASK)}"
            message_id = new_id()
            started = time.monotonic()
            stored_version = next(version)
            try:
                if operation == "get_memory":
                    await memories.get_memory(user.user_id, key)
                elif operation == "store_memory":
                    await memories.store_memory(
                        user.user_id, key, {"version": stored_version, "texto": "METAR"}
                    )
                    tally.stored[key] = stored_version
                elif operation == "search_memories":
                    await memories.search_memories(user.user_id, "metar sbgr")
                elif operation == "get_context":
                    await conversations.get_context(
                        rng.choice(conversation_ids), user.user_id, max_tokens=800
                    )
                else:
                    await conversations.add_message(
                        conversation_id=rng.choice(conversation_ids),
                        user_id=user.user_id,
                        content="Qual o METAR de SBGR agora?",
                        message_type="user_input",
                        message_id=message_id,
                    )
                    tally.appended.append(message_id)
            except StratusError as exc:
                tally.typed[f"{operation}: {type(exc).__name__}"] += 1
                if operation == "add_message":
                    tally.unknown_appends.append(message_id)
            except Exception as exc:
                tally.untyped[f"{operation}: {type(exc).__name__}: {exc}"] += 1
            else:
                tally.successes.append((started, time.monotonic()))
            tally.calls[operation] += 1

        async def caller(task: int) -> None:
            rng = random.Random(task)
            while time.monotonic() < ends:
                await call_once(task, rng)

        events: list[float] = []
        admin = await asyncpg.connect(driver_url(url))

        async def terminator() -> None:
            while time.monotonic() < ends:
                await asyncio.sleep(every)
                events.append(time.monotonic())
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )

        try:
            await asyncio.gather(terminator(), *(caller(task) for task in range(tasks)))
            lost = await acknowledged_writes_lost(admin, tally, conversation_ids)
        finally:
            await admin.close()
            await db.close()
        recoveries = [
            min((end - event for start, end in tally.successes if start >= event), default=float("nan"))
            for event in events
        ]
        return tally, recoveries, lost, server


async def acknowledged_writes_lost(
    admin: asyncpg.Connection, tally: Tally, conversation_ids: list[uuid.UUID]
) -> int:
    """Acknowledged appends missing (or stored twice), plus keys holding an older value than one acknowledged."""
    stored = Counter(
        row["message_id"]
        for row in await admin.fetch(
            "SELECT message_id FROM messages WHERE conversation_id = ANY($1::uuid[])", conversation_ids
        )
    )
    lost = sum(1 for message_id in tally.appended if stored[message_id] != 1)
    values = {
        row["key"]: row["version"]
        for row in await admin.fetch("SELECT key, (value->>'version')::bigint AS version FROM memory_entries")
    }
    lost += sum(1 for key, version in tally.stored.items() if values.get(key, -1) < version)
    return lost


def report(
    tally: Tally, recoveries: list[float], lost: int, seconds: float, tasks: int, every: float
) -> list[str]:
    measured = sorted(value * 1000 for value in recoveries if value == value)  # NaN: no success followed
    lines = [
        f"{seconds:.0f} s, {tasks} tasks, every session of the database ended every {every * 1000:.0f} ms "
        f"({len(recoveries)} events).",
        "",
        "| Figure | Value |",
        "|---|---:|",
        f"| calls | {sum(tally.calls.values()):,} |",
        f"| succeeded | {len(tally.successes):,} |",
        f"| typed failures (StratusError) | {sum(tally.typed.values()):,} |",
        f"| untyped failures (must be 0) | {sum(tally.untyped.values()):,} |",
        f"| acknowledged writes lost (must be 0) | {lost:,} |",
        f"| appends whose outcome the caller could not know | {len(tally.unknown_appends):,} |",
    ]
    if measured:
        lines += [
            f"| first success after an event: median ms | {statistics.median(measured):.1f} |",
            f"| first success after an event: p95 ms | {measured[int(0.95 * (len(measured) - 1))]:.1f} |",
            f"| first success after an event: max ms | {measured[-1]:.1f} |",
        ]
    lines += ["", "Typed failures by call and error:", ""]
    lines += [f"- {name}: {count:,}" for name, count in tally.typed.most_common()] or ["- none"]
    if tally.untyped:
        lines += ["", "Untyped failures:", ""]
        lines += [f"- {name}: {count:,}" for name, count in tally.untyped.most_common()]
    return lines


def write_operations_section(lines: list[str]) -> None:
    start, end = "<!-- soak:start -->", "<!-- soak:end -->"
    section = "\n".join([start, *lines, end])
    existing = OPERATIONS_DOC.read_text(encoding="utf-8")
    if start in existing:
        head, _, rest = existing.partition(start)
        existing = head + section + rest.partition(end)[2]
    else:
        existing = existing.rstrip() + "\n\n" + section + "\n"
    OPERATIONS_DOC.write_text(existing, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--every", type=float, default=0.25, help="seconds between terminations")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/operations.md alone")
    arguments = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "CRITICAL")
    tally, recoveries, lost, server = asyncio.run(soak(arguments.seconds, arguments.tasks, arguments.every))
    lines = [
        f"{environment(PACKAGES)}; {server}.",
        "",
        *report(tally, recoveries, lost, arguments.seconds, arguments.tasks, arguments.every),
    ]
    print("\n".join(lines))
    if not arguments.no_write:
        write_operations_section(lines)
        print(f"written to {OPERATIONS_DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
