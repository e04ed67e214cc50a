"""Memory benchmark: stratus_db against hand-written asyncpg (the floor) and LangGraph's AsyncPostgresStore (the peer).

    make bench-memory   (or: .venv/bin/python bench/memory.py [--users 1000] [--per-user 100] [--only store create get search])

Builds a throw-away PostgreSQL database with USERS × PER_USER memories whose values are sentences of the Portuguese
aviation corpus (bench/data), loads the same items into the peer's tables, then measures each operation at
concurrency 1 and 16 in one run and writes the table into docs/benchmarks.md. Not a test: nothing here asserts.
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
    server_version,
    write_section,
)
from stratus_db import Database, MemoryManager
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


async def seed(
    url: str, users: list[uuid.UUID], per_user: int, sentences: list[str]
) -> dict[uuid.UUID, list[str]]:
    """Users and memories written with COPY (seeding is not what is measured); returns each user's keys."""
    rng = random.Random(7)
    keys: dict[uuid.UUID, list[str]] = {}
    now = datetime.now(UTC)
    connection = await asyncpg.connect(driver_url(url))
    try:
        await connection.copy_records_to_table(
            "users",
            records=[
                (u, f"Piloto {i}", f"piloto{i}@bench.com.br", "pilot", "[]", None, "{}", now, now, now)
                for i, u in enumerate(users)
            ],
        )
        rows = []
        for user in users:
            keys[user] = [f"{TOPICS[i % len(TOPICS)]}_{i}" for i in range(per_user)]
            for key in keys[user]:
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
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return keys


OPERATIONS = ("store", "create", "get", "search")


async def run(user_count: int, per_user: int, only: tuple[str, ...]) -> tuple[list[Result], str]:
    sentences = corpus_sentences()
    rng = random.Random(11)
    users = [new_id() for _ in range(user_count)]
    results: list[Result] = []
    async with throwaway_postgres_database() as url:
        print(f"seeding {user_count * per_user:,} memories over {user_count:,} users …", flush=True)
        keys = await seed(url, users, per_user, sentences)
        server = await server_version(url)
        plain = driver_url(url)

        def pick(index: int) -> tuple[uuid.UUID, str]:
            user = users[(index * 7919) % len(users)]
            return user, keys[user][(index * 31) % per_user]

        async with AsyncPostgresStore.from_conn_string(
            plain, pool_config={"min_size": 16, "max_size": 16}
        ) as store:
            await store.setup()
            for start in range(0, len(users), 50):
                await store.abatch(
                    [
                        PutOp(("users", str(user)), key, {"text": rng.choice(sentences)})
                        for user in users[start : start + 50]
                        for key in keys[user]
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
    return results, server


def write_markdown(results: list[Result], server: str, user_count: int, per_user: int) -> None:
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
            "`compare`): the machine is noisy, so read the ratios, not the last digit.",
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
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    arguments = parser.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    results, server = asyncio.run(run(arguments.users, arguments.per_user, tuple(arguments.only)))
    if not arguments.no_write and tuple(arguments.only) == OPERATIONS:
        write_markdown(results, server, arguments.users, arguments.per_user)
        print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
