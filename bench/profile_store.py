"""Where a coalesced store_memory's client CPU goes: cProfile of concurrent updates (or new keys) on PostgreSQL.

    .venv/bin/python bench/profile_store.py [--mode update|create] [--stores 8000] [--tasks 16]

Builds a throw-away database with 200 users and 5 memories each, then stores `--stores` times from `--tasks` tasks
(updates of those keys, or new keys) under cProfile, and prints the calls by cumulative time. Not a test and not a
benchmark: the profiler roughly doubles the cost of each Python call, so read proportions, not microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stratus_db import Database, MemoryManager, UserManager
from tests.fixtures.databases import settings_for, throwaway_postgres_database

USERS = 200
KEYS_PER_USER = 5


async def profile(mode: str, stores: int, tasks: int) -> None:
    async with throwaway_postgres_database() as url:
        db = Database(
            settings_for(url).model_copy(update={"STRATUS_POOL_SIZE": tasks, "STRATUS_POOL_MAX_OVERFLOW": 0})
        )
        try:
            accounts, memories = UserManager(db), MemoryManager(db)
            users = [
                (await accounts.create_user(f"Piloto {n}", f"piloto{n}@perfil.com.br", "pilot")).user_id
                for n in range(USERS)
            ]
            for user in users:
                for index in range(KEYS_PER_USER):
                    await memories.store_memory(user, f"chave_{index}", "valor inicial", "long_term")
            numbers = iter(range(stores))

            async def worker() -> None:
                for number in numbers:
                    user = users[(number * 7919) % USERS]
                    key = f"chave_{(number * 31) % KEYS_PER_USER}" if mode == "update" else f"nova_{number}"
                    await memories.store_memory(user, key, f"Cessna 172, revisão {number}", "long_term", 0.5)

            profiler = cProfile.Profile()
            wall, cpu = time.perf_counter(), time.process_time()
            profiler.enable()
            await asyncio.gather(*(worker() for _ in range(tasks)))
            profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await db.close()
    print(
        f"{stores / wall:,.0f} stores/s, client CPU {cpu / stores * 1e6:,.0f} µs a store (under the profiler)"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"stratus_db|asyncpg|sqlalchemy", 50)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("update", "create"), default="update")
    parser.add_argument("--stores", type=int, default=8000)
    parser.add_argument("--tasks", type=int, default=16)
    arguments = parser.parse_args()
    asyncio.run(profile(arguments.mode, arguments.stores, arguments.tasks))


if __name__ == "__main__":
    main()
