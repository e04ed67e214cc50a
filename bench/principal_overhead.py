"""What naming the principal costs a call: store_memory and add_message with the principal from the context, as the
`principal=` argument, or with none (STRATUS_ANONYMOUS_CALLS=system), one call at a time.

    .venv/bin/python bench/principal_overhead.py [--backend sqlite|postgresql] [--calls 1000] [--rounds 5]
        [--operation-only]

Also times an empty `db.operation(...)` block with its authorization, where the principal's handling is all there is
to measure. Prints the best round's microseconds of wall time and of client CPU per call (the ways take turns within
each round, so a busy machine slows them alike; on SQLite the wall time is mostly the commit's fsync). Runs against whichever `stratus_db` is imported: with PYTHONPATH pointing at another checkout's `src`, the
same script measures that one (a version without the argument skips its rows). Not part of `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stratus_db import ConversationManager, Database, MemoryManager, Principal, UserManager
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database


@asynccontextmanager
async def _database(backend: str) -> AsyncIterator[Database]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            db = Database(settings_for(sqlite_url(Path(directory) / "overhead.db")))
            await db.migrate()
            try:
                yield db
            finally:
                await db.close()
    else:
        async with throwaway_postgres_database() as url:
            db = Database(settings_for(url))
            try:
                yield db
            finally:
                await db.close()


Way = tuple[str, Callable[[], AbstractAsyncContextManager[Any]], dict[str, Any]]
"""A way of naming the principal: its label, the context around the calls, the keyword arguments of each call."""


async def _rounds(
    ways: list[Way], call: Callable[[dict[str, Any], int], Awaitable[object]], calls: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Each way's best round: µs of wall time and of this process's CPU per call. The ways take turns in a round."""
    best = {label: (float("inf"), float("inf")) for label, _scope, _arguments in ways}
    for _round in range(rounds):
        for label, scope, arguments in ways:
            async with scope():
                wall, cpu = time.perf_counter(), time.process_time()
                for number in range(calls):
                    await call(arguments, number)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[label] = (min(best[label][0], wall / calls * 1e6), min(best[label][1], cpu / calls * 1e6))
    return best


async def measure(backend: str, calls: int, rounds: int, operation_only: bool) -> None:
    async with _database(backend) as db:
        users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
        owner = (await users.create_user("Piloto", "piloto@custo.com.br", "pilot")).user_id
        conversation = (await conversations.create_conversation(owner, "Custo")).conversation_id
        await memories.store_memory(owner, "aeronave", "PT-ABC", "long_term")
        agent = Principal.agent("briefing", acting_for=owner)
        takes_argument = "principal" in inspect.signature(memories.store_memory).parameters
        ways: list[Way] = [
            ("no principal", nullcontext, {}),
            ("context", lambda: db.context(principal=agent), {}),
        ]
        if takes_argument:
            ways.append(("argument", nullcontext, {"principal": agent}))

        async def store(arguments: dict[str, Any], number: int) -> object:
            # A changed value each time: an update that writes its row and its audit row.
            return await memories.store_memory(owner, "aeronave", f"PT-{number}", **arguments)

        async def append(arguments: dict[str, Any], number: int) -> object:
            return await conversations.add_message(conversation, owner, f"METAR SBGR {number}", **arguments)

        async def empty(arguments: dict[str, Any], _number: int) -> object:
            async with db.operation("memory.store", **arguments) as op:
                await op.authorize(owner)
            return None

        print(f"{backend}, {calls} calls a round, best of {rounds} rounds, µs per call (wall / client CPU):")
        rows = [("empty operation + authorize", empty, calls * 20)]
        if not operation_only:
            rows += [("store_memory (update)", store, calls), ("add_message", append, calls)]
        for name, call, count in rows:
            best = await _rounds(ways, call, count, rounds)
            print(
                f"  {name:28}"
                + "".join(f"  {label} {wall:8.1f} / {cpu:7.1f}" for label, (wall, cpu) in best.items())
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--operation-only", action="store_true", help="time only the empty operation (calls × 20 of them)"
    )
    arguments = parser.parse_args()
    asyncio.run(measure(arguments.backend, arguments.calls, arguments.rounds, arguments.operation_only))


if __name__ == "__main__":
    main()
