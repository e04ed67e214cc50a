"""What the memory_personalisation consent check costs the memory hot paths, with the check off, on, and on without
its cache.

    make bench-consent   (or: .venv/bin/python bench/consent_cost.py [--ops 6000] [--rounds 3] [--no-write])

One throw-away PostgreSQL database, three handles on it taking turns in slices: the default (STRATUS_CONSENT_REQUIRED
without memory_personalisation: no check), the check answered by its per-process cache (an active user within the
TTL: the TTL is made long enough here that no answer expires during a slice), and the check reading the ledger every
time (TTL 0: the cost of a miss, which a user pays once per STRATUS_CONSENT_CACHE_TTL_S with the cache on). Every user has granted consent, so every call goes through. The
operations, at concurrency 16: store_memory (an update of one of 20 keys of 100 users), get_memory (served by the memory
cache: the path where a check weighs most) and search_memories. Writes the table into docs/benchmarks.md. Not a test:
nothing here asserts.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import Spent, _timed, corpus_sentences, run_sliced
from stratus_db import ConsentManager, Database, MemoryManager, UserManager
from tests.fixtures.databases import settings_for, throwaway_postgres_database

SETUPS = {
    "check off (default)": {},
    "check on, answered by the cache": {"STRATUS_CONSENT_CACHE_TTL_S": 300.0},
    "check on, no cache (TTL 0)": {"STRATUS_CONSENT_CACHE_TTL_S": 0.0},
}
CONCURRENCY = 16
USERS = 100
KEYS = 20


async def measure(ops: int, rounds: int) -> list[str]:
    sentences = corpus_sentences()
    async with throwaway_postgres_database() as url:
        base = settings_for(url).model_copy(
            update={"STRATUS_POOL_SIZE": CONCURRENCY, "STRATUS_POOL_MAX_OVERFLOW": 0}
        )
        handles = {
            setup: Database(
                base.model_copy(
                    update={
                        **changes,
                        "STRATUS_CONSENT_REQUIRED": base.STRATUS_CONSENT_REQUIRED
                        | ({"memory_personalisation"} if changes else set()),
                    }
                )
            )
            for setup, changes in SETUPS.items()
        }
        first = next(iter(handles.values()))
        try:
            users = [
                (
                    await UserManager(first).create_user(f"Piloto {n}", f"piloto{n}@consent.com.br", "pilot")
                ).user_id
                for n in range(USERS)
            ]
            for user in users:
                await ConsentManager(first).grant_consent(user, "memory_personalisation", "v1", "app")
                for key in range(KEYS):
                    await MemoryManager(first).store_memory(
                        user, f"chave_{key}", sentences[key % len(sentences)]
                    )
            managers = {setup: MemoryManager(handle) for setup, handle in handles.items()}

            def operations(memories: MemoryManager) -> dict[str, Callable[[int], Awaitable[Any]]]:
                return {
                    "store_memory": lambda i: memories.store_memory(
                        users[i % USERS], f"chave_{i % KEYS}", sentences[i % len(sentences)]
                    ),
                    "get_memory (cached)": lambda i: memories.get_memory(
                        users[i % USERS], f"chave_{i % KEYS}"
                    ),
                    "search_memories": lambda i: memories.search_memories(
                        users[i % USERS], "METAR SBGR vento"
                    ),
                }

            names = list(operations(managers[next(iter(managers))]))
            lines = [
                "| Operation, concurrency 16 | " + " | ".join(SETUPS) + " |",
                "|---|" + "---:|" * len(SETUPS),
            ]
            for name in names:
                spent = {setup: Spent() for setup in SETUPS}
                for setup in SETUPS:  # warm-up: pools, prepared statements, every key in each memory cache
                    await _timed(operations(managers[setup])[name], range(USERS * KEYS), CONCURRENCY, [])
                order = list(SETUPS)
                for round_number in range(rounds):
                    start, stop = ops * round_number // rounds, ops * (round_number + 1) // rounds
                    order = order[1:] + order[:1]  # each setup goes first in turn
                    for setup in order:
                        spent[setup] += await _timed(
                            operations(managers[setup])[name], range(start, stop), CONCURRENCY, []
                        )
                base_cpu = spent["check off (default)"].client_cpu
                cells = []
                for setup in SETUPS:
                    rate, cpu = ops / spent[setup].wall, spent[setup].client_cpu * 1e6 / ops
                    relative = (spent[setup].client_cpu / base_cpu - 1) * 100
                    cells.append(f"{rate:,.0f}/s, client {cpu:.1f} µs ({relative:+.1f} %)")
                    print(f"{name:<20} {setup:<28} {cells[-1]}", flush=True)
                lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
        finally:
            for handle in handles.values():
                await handle.close()
    return lines


def main() -> None:
    run_sliced(
        __doc__,
        measure,
        section="consent",
        intro=(
            "Throughput and client CPU a call with the memory_personalisation consent check off, on (cached), and "
            "on without its cache (the percentage: client CPU against the check off), `make bench-consent`:"
        ),
        packages=("sqlalchemy", "asyncpg"),
        default_ops=6000,
        ops_help="calls per setup and operation",
    )


if __name__ == "__main__":
    main()
