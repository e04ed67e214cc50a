"""Memory benchmark: stratus_db against hand-written asyncpg (the floor) and LangGraph's AsyncPostgresStore (the peer).

    make bench-memory   (or: .venv/bin/python bench/memory.py [--users 1000] [--per-user 100] [--only store create get search]
                                                    [--seed api|copy] [--seed-only])

Builds a throw-away PostgreSQL database with USERS × PER_USER memories whose values are sentences of the Portuguese
aviation corpus (bench/data), loads the same items into the peer's tables, then measures each operation at
concurrency 1 and 16 in one run and writes the table into docs/benchmarks.md. Not a test: nothing here asserts.

The memories are stored through the public API (`create_user`, then `store_memory` at concurrency 16) into the fresh
database, never analyzed, and the seeding's throughput is printed every 10,000 stores: it should not fall as the table
grows. `--seed copy` writes them with COPY instead (quicker); `--seed-only` stops after seeding.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from langgraph.store.base import PutOp
from langgraph.store.postgres.aio import AsyncPostgresStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    RESULTS,
    ROOT,
    Contender,
    Result,
    compare,
    corpus_sentences,
    driver_url,
    environment,
    results_table,
    seed_through,
    seed_users,
    sequential_scans,
    server_version,
    write_section,
)
from stratus_db import Database, MemoryManager, UserManager
from stratus_db.kit.ids import new_id
from stratus_db.kit.text import query_terms, search_text
from tests.fixtures.databases import settings_for, throwaway_postgres_database

TOPICS = [
    "preferred_aircraft", "base", "ultimo_metar", "rota_frequente", "cma_validade", "habilitacao", "combustivel",
    "peso_balanceamento", "notam", "instrutor", "prova_teorica", "jornada", "manutencao", "plano_de_voo",
]  # fmt: skip
PACKAGES = ("sqlalchemy", "asyncpg", "psycopg", "langgraph-checkpoint-postgres", "pydantic")
QUERIES = [
    "meteorologia SBGR", "METAR", "Cesna 172", "combustível reserva", "validade do CMA", "NOTAM pista fechada",
    "peso e balanceamento", "plano de voo IFR", "inspeção de 100 horas", "vento cruzado", "jornada RBAC 135",
    "prova teórica piloto privado", "TAF SBKP", "navegação VFR",
]  # fmt: skip

FLOOR_UPSERT = """
WITH up AS (
    INSERT INTO memory_entries (memory_id, user_id, memory_type, key, value, importance_score, access_count,
                                created_at, updated_at, search_text)
    VALUES ($1, $2, 'long_term', $3, $4::jsonb, 0.5, 0, now(), now(), $5)
    ON CONFLICT (user_id, key) DO UPDATE
        SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at, search_text = EXCLUDED.search_text
    RETURNING memory_id, user_id
)
INSERT INTO audit_log (audit_id, user_id, action, table_name, record_id, new_values, timestamp, actor)
SELECT $6, user_id, 'update', 'memory_entries', memory_id, $4::jsonb, now(), 'system:bench' FROM up
"""
FLOOR_READ = """
UPDATE memory_entries SET access_count = access_count + 1, last_accessed_at = now()
WHERE user_id = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > now())
RETURNING *
"""
FLOOR_SEARCH = """
SELECT memory_id, key, value, ts_rank_cd(search_vector, query) AS rank
FROM memory_entries, to_tsquery('stratus_portuguese', $2) AS query
WHERE user_id = $1 AND search_vector @@ query
ORDER BY rank DESC LIMIT 10
"""


def user_keys(per_user: int) -> list[str]:
    return [f"{TOPICS[i % len(TOPICS)]}_{i}" for i in range(per_user)]


async def seed_through_api(
    url: str, user_count: int, per_user: int, sentences: list[str]
) -> tuple[list[uuid.UUID], list[float], int]:
    """Users and memories stored through the public API at concurrency 16, into the fresh database (no statistics:
    autovacuum is off here); returns the users, the stores' throughput of each 10,000 and how many times the
    seeding read memory_entries whole."""
    rng = random.Random(7)
    scanned = await sequential_scans(url, "memory_entries")
    db = Database(
        settings_for(url).model_copy(update={"STRATUS_POOL_SIZE": 16, "STRATUS_POOL_MAX_OVERFLOW": 0})
    )
    try:
        accounts, users = UserManager(db), []

        async def create(index: int) -> None:
            user = await accounts.create_user(f"Piloto {index}", f"piloto{index}@bench.com.br", "pilot")
            users.append(user.user_id)

        await seed_through("create_user, c=16", user_count, create)
        keys, memories = user_keys(per_user), MemoryManager(db)

        async def store(index: int) -> None:
            # Every user's first key, then every user's second…: each user's memories grow along with the table.
            user, key = users[index % user_count], keys[index // user_count]
            await memories.store_memory(
                user, key, rng.choice(sentences), "long_term", importance_score=rng.random()
            )

        rates = await seed_through("store_memory (new key), c=16", user_count * per_user, store)
    finally:
        await db.close()
    scanned = await sequential_scans(url, "memory_entries") - scanned
    print(f"memory_entries read whole {scanned:,} times while seeding", flush=True)
    return users, rates, scanned


async def seed_with_copy(url: str, user_count: int, per_user: int, sentences: list[str]) -> list[uuid.UUID]:
    """Users and memories written with COPY; returns the users."""
    rng = random.Random(7)
    users = [new_id() for _ in range(user_count)]
    now = datetime.now(UTC)
    connection = await asyncpg.connect(driver_url(url))
    try:
        await seed_users(connection, users)
        rows = []
        for user in users:
            for key in user_keys(per_user):
                value = rng.choice(sentences)
                rows.append(
                    (new_id(), user, "long_term", key, json.dumps(value), rng.random(), 0, None, now, now, None,
                     search_text(key, value))
                )  # fmt: skip
        await connection.copy_records_to_table(
            "memory_entries",
            records=rows,
            columns=[
                "memory_id", "user_id", "memory_type", "key", "value", "importance_score", "access_count",
                "expires_at", "created_at", "updated_at", "last_accessed_at", "search_text",
            ],
        )  # fmt: skip
    finally:
        await connection.close()
    return users


OPERATIONS = ("store", "create", "get", "search")


async def run(
    user_count: int, per_user: int, only: tuple[str, ...], *, through_api: bool, seed_only: bool
) -> tuple[list[Result], str, tuple[list[float], int]]:
    sentences = corpus_sentences()
    rng = random.Random(11)
    results: list[Result] = []
    rates: list[float] = []
    scanned = 0
    async with throwaway_postgres_database() as url:
        print(f"seeding {user_count * per_user:,} memories over {user_count:,} users …", flush=True)
        if through_api:
            users, rates, scanned = await seed_through_api(url, user_count, per_user, sentences)
        else:
            users = await seed_with_copy(url, user_count, per_user, sentences)
        server = await server_version(url)
        plain = driver_url(url)
        if seed_only:
            return results, server, (rates, scanned)
        # What is measured below runs with statistics, as a server with autovacuum would have them.
        connection = await asyncpg.connect(plain)
        try:
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
        keys = user_keys(per_user)

        def pick(index: int) -> tuple[uuid.UUID, str]:
            return users[(index * 7919) % len(users)], keys[(index * 31) % per_user]

        async with AsyncPostgresStore.from_conn_string(
            plain, pool_config={"min_size": 16, "max_size": 16}
        ) as store:
            await store.setup()
            for start in range(0, len(users), 50):
                await store.abatch(
                    [
                        PutOp(("users", str(user)), key, {"text": rng.choice(sentences)})
                        for user in users[start : start + 50]
                        for key in keys
                    ]
                )
            pool = await asyncpg.create_pool(plain, min_size=16, max_size=16)
            # Every system gets a pool of 16 connections, as many as the higher concurrency, and no overflow.
            pooled = settings_for(url).model_copy(
                update={"STRATUS_POOL_SIZE": 16, "STRATUS_POOL_MAX_OVERFLOW": 0}
            )
            cold = Database(pooled.model_copy(update={"STRATUS_MEMORY_CACHE_MAX_ENTRIES": 0}))
            cached = Database(pooled)
            cold_memories, cached_memories = MemoryManager(cold), MemoryManager(cached)
            hot = pick(0)

            async def stratus_store(i: int) -> None:
                await cold_memories.store_memory(*pick(i), f"{rng.choice(sentences)} #{i}")

            async def floor_store(i: int) -> None:
                user, key = pick(i)
                value = f"{rng.choice(sentences)} #{i}"
                await pool.execute(FLOOR_UPSERT, new_id(), user, key, json.dumps(value), search_text(key, value),
                                   new_id())  # fmt: skip

            fresh_keys = itertools.count()

            async def stratus_create(i: int) -> None:
                user = pick(i)[0]
                await cold_memories.store_memory(user, f"nova_{next(fresh_keys)}", f"{rng.choice(sentences)} #{i}",
                                                 "long_term")  # fmt: skip

            async def floor_create(i: int) -> None:
                user, key, value = pick(i)[0], f"nova_{next(fresh_keys)}", f"{rng.choice(sentences)} #{i}"
                await pool.execute(FLOOR_UPSERT, new_id(), user, key, json.dumps(value), search_text(key, value),
                                   new_id())  # fmt: skip

            operations = {
                # store: an existing key gets a new value (the audit row records the change)
                "store": [
                    ("stratus_db", "store_memory", stratus_store),
                    ("asyncpg (floor)", "upsert+audit", floor_store),
                    ("langgraph (peer)", "aput", lambda i: store.aput(
                        ("users", str(pick(i)[0])), pick(i)[1], {"text": f"{rng.choice(sentences)} #{i}"})),
                ],
                # create: a key the user does not have yet (stratus_db checks the per-user cap)
                "create": [
                    ("stratus_db", "store_memory (new key)", stratus_create),
                    ("asyncpg (floor)", "insert+audit", floor_create),
                    ("langgraph (peer)", "aput (new key)", lambda i: store.aput(
                        ("users", str(pick(i)[0])), f"nova_{next(fresh_keys)}",
                        {"text": f"{rng.choice(sentences)} #{i}"})),
                ],
                "get": [
                    ("stratus_db", "get_memory (cold)", lambda i: cold_memories.get_memory(*pick(i))),
                    ("asyncpg (floor)", "read+count", lambda i: pool.fetchrow(FLOOR_READ, *pick(i))),
                    ("langgraph (peer)", "aget", lambda i: store.aget(("users", str(pick(i)[0])), pick(i)[1])),
                    ("stratus_db", "get_memory (cached)", lambda i: cached_memories.get_memory(*hot)),
                ],
                "search": [
                    ("stratus_db", "search_memories", lambda i: cold_memories.search_memories(
                        pick(i)[0], QUERIES[i % len(QUERIES)])),
                    ("asyncpg (floor)", "full-text query", lambda i: pool.fetch(
                        FLOOR_SEARCH, pick(i)[0], " | ".join(query_terms(QUERIES[i % len(QUERIES)])))),
                    ("langgraph (peer)", "asearch", lambda i: store.asearch(
                        ("users", str(pick(i)[0])), query=QUERIES[i % len(QUERIES)], limit=10)),
                ],
            }  # fmt: skip
            try:
                await cached_memories.get_memory(*hot)
                for concurrency, ops in ((1, 1500), (16, 6000)):
                    for name in only:
                        results += await compare(
                            [
                                Contender(system, operation, call)
                                for system, operation, call in operations[name]
                            ],
                            ops,
                            concurrency,
                            warmup=4 * concurrency,
                        )
            finally:
                await cold.close()
                await cached.close()
                await pool.close()
    return results, server, (rates, scanned)


def seeding_line(rates: list[float], scanned: int) -> str:
    """How fast seeding through the API went at its start and at its end."""
    if not rates:
        return "The memories were written with COPY."
    return (
        f"The memories were stored through the API (`store_memory` of new keys, concurrency 16) into the fresh "
        f"database, without statistics: {rates[0]:,.0f} stores/s over the first 10,000, {rates[-1]:,.0f} over the "
        f"last (slowest 10,000: {min(rates):,.0f}/s), reading `memory_entries` whole {scanned:,} times; then ANALYZE."
    )


def write_markdown(
    results: list[Result], server: str, user_count: int, per_user: int, seeding: tuple[list[float], int]
) -> None:
    write_section(
        "memory",
        [
            "## Memory (`bench/memory.py`)",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {environment(PACKAGES)}; {server} on 127.0.0.1 over TCP. "
            f"{user_count:,} users × {per_user} memories = {user_count * per_user:,} memories; every system on a pool of "
            "16 connections; values are sentences "
            "of the Portuguese aviation corpus. `store_memory` gives an existing key a new value; `(new key)` stores a key "
            "the user does not have yet (stratus_db checks the per-user cap). `get_memory (cold)` runs with the cache "
            "off; `(cached)` reads one hot key. The systems of one operation take turns in three slices within one run (bench/harness.py "
            "`compare`): the machine is noisy, so read the ratios, not the last digit. "
            + seeding_line(*seeding),
            "",
            *results_table(results),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=OPERATIONS,
        default=list(OPERATIONS),
        help="measure only these operations",
    )
    parser.add_argument(
        "--seed",
        choices=("api", "copy"),
        default="api",
        help="store the memories through the public API (default) or write them with COPY",
    )
    parser.add_argument("--seed-only", action="store_true", help="stop after seeding (implies --no-write)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    results, server, seeding = asyncio.run(
        run(
            arguments.users,
            arguments.per_user,
            tuple(arguments.only),
            through_api=arguments.seed == "api",
            seed_only=arguments.seed_only,
        )
    )
    if not (arguments.no_write or arguments.seed_only) and tuple(arguments.only) == OPERATIONS:
        write_markdown(results, server, arguments.users, arguments.per_user, seeding)
        print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
