"""Conversations benchmark: stratus_db against hand-written asyncpg (the floor) and LangChain's
PostgresChatMessageHistory (the peer), on the Portuguese aviation corpus.

    make bench-conversations   (or: .venv/bin/python bench/conversations.py [--users 1000] [--no-write] …)

Builds a throw-away PostgreSQL database (migrated by Database.migrate()) and measures, at concurrency 1 and 16 in one
run: appends (`add_message` / the same writes as one hand-written statement / the peer's `aadd_messages`), the
context read (`get_context` of about 100 messages out of 1,000 / the same query on asyncpg / the peer's
`aget_messages` on a 100-message session) and bulk import (`import_messages` / raw `copy_records_to_table`). The
contenders of one comparison take turns in slices (bench/harness.py `compare`), so the ratios between them are the
figures to read on a busy machine. Prints the issue's targets with the ratios, and writes everything between the
`conversations` markers of docs/benchmarks.md. Not a test: nothing here asserts. It holds three pools of 16
connections (stratus_db, asyncpg, psycopg) open at once: the server needs 48 free connections.

Users and conversations are written with COPY; the long conversations' history goes through the public API
(`add_message` at concurrency 16) into the fresh database, never analyzed, with its throughput printed every 2,000
messages (`--seed copy`: COPY as well; `--seed-only`: stop after seeding).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_postgres import PostgresChatMessageHistory
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    RESULTS,
    ROOT,
    Contender,
    Result,
    compare,
    corpus_messages,
    driver_url,
    environment,
    results_table,
    seed_through,
    seed_users,
    sequential_scans,
    server_version,
    write_section,
)
from stratus_db import ConversationManager, Database
from stratus_db.kit.ids import new_id
from tests.fixtures.databases import settings_for, throwaway_postgres_database

PACKAGES = (
    "sqlalchemy", "asyncpg", "pydantic", "psycopg", "langchain-postgres", "langchain-core",
)  # fmt: skip
POOL_SIZE = 16
"""Every system gets a pool of this many connections: enough for the higher concurrency, no overflow."""
PEER_TABLE = "langchain_chat_history"
_FLOOR_WRITES = """
WITH counted AS (
    UPDATE conversations
    SET message_count = message_count + 1, total_tokens = total_tokens + $8,
        last_activity_at = greatest(last_activity_at, $10), updated_at = $10
    WHERE conversation_id = $2 AND user_id = $3 AND status = 'active'
    RETURNING message_count AS seq, last_activity_at AS created_at
), inserted AS (
    INSERT INTO messages (message_id, conversation_id, user_id, seq, agent_name, message_type, content, metadata,
                          tokens_used, response_time, created_at)
    SELECT $1, $2, $3, seq, $4, $5, $6, $7::jsonb, $8, $9, created_at FROM counted
    RETURNING seq, created_at
)"""
FLOOR_APPEND = (
    _FLOOR_WRITES
    + """, audited AS (
    INSERT INTO audit_log (audit_id, user_id, action, table_name, record_id, new_values, timestamp, actor)
    SELECT $11, $3, 'create', 'messages', $1, $12::jsonb || jsonb_build_object('seq', seq), $10, 'system:bench'
    FROM inserted
)
SELECT seq, created_at FROM inserted
"""
)
FLOOR_APPEND_UNAUDITED = (
    _FLOOR_WRITES
    + """
-- $11 and $12 (the audit row's id and values) unused: the same arguments as FLOOR_APPEND, without its audit row.
SELECT seq, created_at FROM inserted WHERE $11::uuid IS NOT NULL OR $12::jsonb IS NOT NULL
"""
)
FLOOR_CONTEXT = """
SELECT c.summary, c.summarized_through_seq, c.message_count, recent.*
FROM conversations AS c
LEFT JOIN LATERAL (
    SELECT newest.*, sum(greatest(newest.tokens_used, 1)) OVER (ORDER BY newest.seq DESC) AS running_tokens
    FROM (
        SELECT m.message_id, m.seq, m.agent_name, m.message_type, m.content, m.metadata, m.tokens_used,
               m.response_time, m.created_at
        FROM messages AS m
        WHERE m.conversation_id = c.conversation_id AND m.seq > c.summarized_through_seq
        ORDER BY m.seq DESC
        LIMIT $3
    ) AS newest
) AS recent ON recent.running_tokens <= $3
WHERE c.conversation_id = $1 AND c.user_id = $2
ORDER BY recent.seq DESC
"""


@dataclass(frozen=True)
class Sizes:
    users: int
    conversations_per_user: int
    hot_conversations: int
    hot_share: float
    append_ops: int
    history: int
    window: int
    long_conversations: int
    read_ops: int
    import_rows: int
    imports: int
    rounds: int

    def ops(self, total: int, concurrency: int) -> int:
        # A single worker gets a quarter of the work: enough calls for stable percentiles in a quarter of the time.
        return total if concurrency > 1 else max(1, total // 4)


@dataclass(frozen=True)
class Owned:
    conversation_id: uuid.UUID
    user_id: uuid.UUID


def timeline(count: int) -> list[datetime]:
    """Message times a minute apart, ending now: history being imported or read back."""
    end = datetime.now(UTC)
    return [end - timedelta(minutes=count - index) for index in range(count)]


def import_batch(corpus: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` messages in import_messages' shape, cycling through the corpus."""
    times = timeline(count)
    return [
        {
            "content": message["content"],
            "message_type": message["message_type"],
            "agent_name": message["agent_name"],
            "metadata": {"origem": "importacao", "conversa": message["conversation_id"]},
            "tokens_used": message["tokens_used"],
            "response_time": message["response_time"],
            "created_at": times[index],
        }
        for index, message in enumerate(corpus[index % len(corpus)] for index in range(count))
    ]


def peer_message(message: dict[str, Any]) -> BaseMessage:
    if message["message_type"] == "user_input":
        return HumanMessage(content=message["content"])
    if message["message_type"] == "agent_response":
        return AIMessage(content=message["content"], name=message["agent_name"])
    return SystemMessage(content=message["content"])


async def seed_conversations(
    connection: asyncpg.Connection, owned: list[Owned], *, messages: int = 0, tokens: int = 0
) -> None:
    now = datetime.now(UTC)
    await connection.copy_records_to_table(
        "conversations",
        records=[
            (o.conversation_id, o.user_id, f"Conversa {i}", "active", "{}", None, 0, messages, tokens, now, now, now)
            for i, o in enumerate(owned)
        ],
        columns=CONVERSATION_COLUMNS,
    )  # fmt: skip


def message_records(owner: Owned, batch: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """`batch` as rows of the messages table, numbered 1, 2, 3…: what raw COPY writes."""
    return [
        (
            new_id(), owner.conversation_id, owner.user_id, seq, item["agent_name"], item["message_type"],
            item["content"], None, json.dumps(item["metadata"]), item["tokens_used"], item["response_time"],
            item["created_at"],
        )
        for seq, item in enumerate(batch, start=1)
    ]  # fmt: skip


async def seed_history(
    url: str, long_ones: list[Owned], history: list[dict[str, Any]]
) -> tuple[list[float], int]:
    """The long conversations' history appended through `add_message` at concurrency 16, message by message in
    each conversation's order; returns the throughput of each 2,000 and how many times the seeding read the
    conversations table whole."""
    scanned = await sequential_scans(url, "conversations")
    db = Database(
        settings_for(url).model_copy(update={"STRATUS_POOL_SIZE": POOL_SIZE, "STRATUS_POOL_MAX_OVERFLOW": 0})
    )
    conversations = ConversationManager(db)

    async def append(index: int) -> None:
        owner, message = long_ones[index % len(long_ones)], history[index // len(long_ones)]
        await conversations.add_message(
            owner.conversation_id,
            owner.user_id,
            message["content"],
            message["message_type"],
            agent_name=message["agent_name"],
            metadata=message["metadata"],
            tokens_used=message["tokens_used"],
            response_time=message["response_time"],
        )

    try:
        rates = await seed_through(
            f"add_message, c={POOL_SIZE}", len(long_ones) * len(history), append, every=2_000
        )
    finally:
        await db.close()
    scanned = await sequential_scans(url, "conversations") - scanned
    print(f"conversations read whole {scanned:,} times while seeding", flush=True)
    return rates, scanned


WITHOUT_MESSAGE_SEARCH = [
    "ALTER TABLE messages DISABLE TRIGGER messages_search_vector",
    "DROP INDEX ix_messages_search",
]
"""The experiment --without-message-search: what the full-text indexing of messages costs every system's appends."""


async def run(
    sizes: Sizes, *, through_api: bool = True, seed_only: bool = False, without_message_search: bool = False
) -> tuple[list[Result], dict[str, Any]]:
    corpus = corpus_messages()
    rng = random.Random(17)
    facts: dict[str, Any] = {}
    results: list[Result] = []
    async with throwaway_postgres_database() as url:
        plain = driver_url(url)
        facts["server"] = await server_version(url)
        users = [new_id() for _ in range(sizes.users)]
        chats = [Owned(new_id(), user) for user in users for _ in range(sizes.conversations_per_user)]
        long_ones = [Owned(new_id(), users[i % len(users)]) for i in range(sizes.long_conversations)]
        history = import_batch(corpus, sizes.history)
        imports_needed = 1 + sum(
            sizes.ops(sizes.imports, c) + c for c in (1, 16)
        )  # a check, warm-up, measured
        fresh = {
            system: [Owned(new_id(), users[rng.randrange(len(users))]) for _ in range(imports_needed)]
            for system in ("stratus_db", "asyncpg")
        }
        print(
            f"seeding {sizes.users:,} users, {len(chats):,} conversations, {len(long_ones)} × {sizes.history:,} "
            "messages …",
            flush=True,
        )
        seeding = await asyncpg.connect(plain)
        try:
            await seed_users(seeding, users)
            await seed_conversations(seeding, chats + fresh["stratus_db"] + fresh["asyncpg"])
            copied = [] if through_api else history
            await seed_conversations(
                seeding, long_ones, messages=len(copied), tokens=sum(m["tokens_used"] for m in copied)
            )
            for owner in long_ones if copied else []:
                await seeding.copy_records_to_table(
                    "messages", records=message_records(owner, copied), columns=MESSAGE_COLUMNS
                )
        finally:
            await seeding.close()
        facts["seeding"] = await seed_history(url, long_ones, history) if through_api else ([], 0)
        if seed_only:
            return results, facts
        seeding = await asyncpg.connect(plain)
        try:
            for statement in WITHOUT_MESSAGE_SEARCH if without_message_search else []:
                await seeding.execute(statement)
            await seeding.execute("ANALYZE")
        finally:
            await seeding.close()

        # The window's budget is what the newest `window` messages weigh, so exactly that many fit.
        budget = sum(max(1, m["tokens_used"]) for m in history[-sizes.window :])
        peer_sessions = [str(uuid.uuid4()) for _ in long_ones]
        picks = [
            chats[rng.randrange(sizes.hot_conversations)]
            if rng.random() < sizes.hot_share
            else chats[rng.randrange(len(chats))]
            for _ in range(sizes.append_ops + 4 * POOL_SIZE)
        ]

        # Background compression is off: it is an operation of its own (compress_history), which the floor and the
        # peer do not do, and the busy conversations here would pass its threshold within seconds.
        db = Database(
            settings_for(url).model_copy(
                update={
                    "STRATUS_POOL_SIZE": POOL_SIZE,
                    "STRATUS_POOL_MAX_OVERFLOW": 0,
                    "STRATUS_SUMMARY_THRESHOLD_TOKENS": 0,
                }
            )
        )
        conversations = ConversationManager(db)
        # The same reads without the per-process tail cache (conversations/recent.py): what a read costs when the
        # process has not seen the conversation yet, e.g. the first turn after a restart.
        uncached_db = Database(db.settings.model_copy(update={"STRATUS_CONTEXT_CACHE_CONVERSATIONS": 0}))
        uncached = ConversationManager(uncached_db)

        async def keep_session(_connection: asyncpg.Connection) -> None:
            # The floor is one round trip a call: asyncpg's default reset on release would add a second.
            return None

        pool = await asyncpg.create_pool(plain, min_size=POOL_SIZE, max_size=POOL_SIZE, reset=keep_session)
        # The peer as documented: psycopg's default connections (aadd_messages then sends its own COMMIT, and the
        # pool commits the transaction a read leaves open). Its autocommit variant is measured beside it.
        peer_pool = AsyncConnectionPool(plain, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False)
        await peer_pool.open(wait=True)
        try:

            async def stratus_append(index: int) -> None:
                owner, message = picks[index % len(picks)], corpus[index % len(corpus)]
                await conversations.add_message(
                    owner.conversation_id,
                    owner.user_id,
                    message["content"],
                    message["message_type"],
                    agent_name=message["agent_name"],
                    metadata={"canal": "web"},
                    tokens_used=message["tokens_used"],
                    response_time=message["response_time"],
                )

            async def floor_append(index: int) -> None:
                owner, message = picks[index % len(picks)], corpus[index % len(corpus)]
                message_id = new_id()
                audited = {
                    "conversation_id": str(owner.conversation_id),
                    "message_type": message["message_type"],
                    "agent_name": message["agent_name"],
                    "tokens_used": message["tokens_used"],
                    "content_chars": len(message["content"]),
                }
                await pool.fetchrow(
                    FLOOR_APPEND, message_id, owner.conversation_id, owner.user_id, message["agent_name"],
                    message["message_type"], message["content"], json.dumps({"canal": "web"}),
                    message["tokens_used"], message["response_time"], datetime.now(UTC), new_id(),
                    json.dumps(audited),
                )  # fmt: skip

            @asynccontextmanager
            async def peer_connection(autocommit: bool) -> AsyncIterator[AsyncConnection[Any]]:
                async with peer_pool.connection() as connection:
                    if not autocommit:
                        yield connection
                        return
                    # One pool for both variants keeps the server's connection count down while other suites
                    # run; switching an idle connection's autocommit sends nothing to the server.
                    await connection.set_autocommit(True)
                    try:
                        yield connection
                    finally:
                        await connection.set_autocommit(False)

            async with peer_connection(autocommit=True) as connection:
                await PostgresChatMessageHistory.acreate_tables(connection, PEER_TABLE)
                for session in peer_sessions:
                    await PostgresChatMessageHistory(
                        PEER_TABLE, session, async_connection=connection
                    ).aadd_messages([peer_message(m) for m in history[-sizes.window :]])
                await connection.execute("ANALYZE")

            def peer_append(autocommit: bool) -> Callable[[int], Awaitable[None]]:
                async def append(index: int) -> None:
                    owner, message = picks[index % len(picks)], corpus[index % len(corpus)]
                    async with peer_connection(autocommit) as connection:
                        await PostgresChatMessageHistory(
                            PEER_TABLE, str(owner.conversation_id), async_connection=connection
                        ).aadd_messages([peer_message(message)])

                return append

            async def stratus_context(index: int) -> Any:
                owner = long_ones[index % len(long_ones)]
                return await conversations.get_context(owner.conversation_id, owner.user_id, budget)

            async def stratus_context_uncached(index: int) -> Any:
                owner = long_ones[index % len(long_ones)]
                return await uncached.get_context(owner.conversation_id, owner.user_id, budget)

            async def floor_context(index: int) -> Any:
                owner = long_ones[index % len(long_ones)]
                return await pool.fetch(FLOOR_CONTEXT, owner.conversation_id, owner.user_id, budget)

            def peer_read(autocommit: bool) -> Callable[[int], Awaitable[list[BaseMessage]]]:
                async def read(index: int) -> list[BaseMessage]:
                    async with peer_connection(autocommit) as connection:
                        return await PostgresChatMessageHistory(
                            PEER_TABLE, peer_sessions[index % len(peer_sessions)], async_connection=connection
                        ).aget_messages()

                return read

            batch = import_batch(corpus, sizes.import_rows)

            async def stratus_import(_index: int) -> int:
                owner = fresh["stratus_db"].pop()
                result = await conversations.import_messages(owner.conversation_id, owner.user_id, batch)
                return result.imported

            async def floor_import(_index: int) -> None:
                owner = fresh["asyncpg"].pop()
                async with pool.acquire() as connection:
                    await connection.copy_records_to_table(
                        "messages", records=message_records(owner, batch), columns=MESSAGE_COLUMNS
                    )

            print(
                f"import_messages imports {await stratus_import(0):,} of {len(batch):,} messages", flush=True
            )
            window = await stratus_context(0)
            facts["budget"], facts["returned"] = budget, len(window.messages)
            facts["peer_returned"] = len(await peer_read(False)(0))
            print(
                f"get_context({sizes.history:,}-message conversation, max_tokens={budget:,}) returns "
                f"{len(window.messages)} messages; the peer's aget_messages returns {facts['peer_returned']}",
                flush=True,
            )

            for concurrency in (1, 16):
                warmup = 4 * concurrency
                results += await compare(
                    [
                        Contender("stratus_db", "add_message", stratus_append),
                        Contender("asyncpg (floor)", "one-statement append", floor_append),
                        Contender("langchain (peer)", "aadd_messages", peer_append(False)),
                        Contender("langchain (peer, autocommit)", "aadd_messages", peer_append(True)),
                    ],
                    sizes.ops(sizes.append_ops, concurrency),
                    concurrency,
                    rounds=sizes.rounds,
                    warmup=warmup,
                )
                results += await compare(
                    [
                        Contender("stratus_db", f"get_context ({facts['returned']} msgs)", stratus_context),
                        Contender(
                            "stratus_db (no cache)",
                            f"get_context ({facts['returned']} msgs)",
                            stratus_context_uncached,
                        ),
                        Contender("asyncpg (floor)", "window query", floor_context),
                        Contender(
                            "langchain (peer)", f"aget_messages ({facts['peer_returned']})", peer_read(False)
                        ),
                        Contender(
                            "langchain (peer, autocommit)",
                            f"aget_messages ({facts['peer_returned']})",
                            peer_read(True),
                        ),
                    ],
                    sizes.ops(sizes.read_ops, concurrency),
                    concurrency,
                    rounds=sizes.rounds,
                    warmup=warmup,
                )
                results += await compare(
                    [
                        Contender("stratus_db", "import_messages", stratus_import, "rows", sizes.import_rows),
                        Contender(
                            "asyncpg (floor)",
                            "copy_records_to_table",
                            floor_import,
                            "rows",
                            sizes.import_rows,
                        ),
                    ],
                    sizes.ops(sizes.imports, concurrency),
                    concurrency,
                    rounds=min(sizes.rounds, sizes.ops(sizes.imports, concurrency)),
                    warmup=concurrency,
                )
        finally:
            await db.close()
            await uncached_db.close()
            await pool.close()
            await peer_pool.close()
    return results, facts


@dataclass(frozen=True)
class Target:
    text: str
    measured: str
    met: bool


def _find(results: list[Result], system: str, operation: str, concurrency: int) -> Result | None:
    return next(
        (
            r
            for r in results
            if r.system == system and r.operation.startswith(operation) and r.concurrency == concurrency
        ),
        None,
    )


def _ratio_target(
    text: str, ours: Result | None, theirs: Result | None, at_least: float, variant: Result | None = None
) -> Target:
    if ours is None or theirs is None:
        return Target(text, "not measured", False)
    ratio = ours.throughput / theirs.throughput
    measured = f"{ours.throughput:,.0f} vs {theirs.throughput:,.0f} {ours.unit}/s = {ratio:.2f}× (needs ≥ {at_least:g}×)"
    if variant is not None:
        measured += f"; {ours.throughput / variant.throughput:.2f}× the peer in autocommit"
    return Target(text, measured, ratio >= at_least)


def targets(results: list[Result]) -> list[Target]:
    """The targets of issue 4, item 7, against this run."""
    append = _find(results, "stratus_db", "add_message", 16)
    context = _find(results, "stratus_db", "get_context", 16)
    context_alone = _find(results, "stratus_db", "get_context", 1)
    listed = [
        _ratio_target(
            "`add_message` ≥ 80 % of the floor at concurrency 16",
            append,
            _find(results, "asyncpg (floor)", "one-statement append", 16),
            0.8,
        ),
        _ratio_target(
            "`add_message` ≥ 1.5 × the peer's `aadd_messages` at concurrency 16",
            append,
            _find(results, "langchain (peer)", "aadd_messages", 16),
            1.5,
            _find(results, "langchain (peer, autocommit)", "aadd_messages", 16),
        ),
        _ratio_target(
            "`get_context` ≥ 3 × the peer's `aget_messages` (100 messages) at concurrency 16",
            context,
            _find(results, "langchain (peer)", "aget_messages", 16),
            3.0,
            _find(results, "langchain (peer, autocommit)", "aget_messages", 16),
        ),
    ]
    if context_alone is None:
        listed.append(Target("`get_context` p95 ≤ 5 ms at concurrency 1", "not measured", False))
    else:
        p95 = context_alone.percentile(0.95)
        listed.append(Target("`get_context` p95 ≤ 5 ms at concurrency 1", f"p95 {p95:.3f} ms", p95 <= 5.0))
    listed.append(
        _ratio_target(
            "`import_messages` ≥ 50 % of raw `COPY` at concurrency 16",
            _find(results, "stratus_db", "import_messages", 16),
            _find(results, "asyncpg (floor)", "copy_records_to_table", 16),
            0.5,
        )
    )
    return listed


def targets_table(listed: list[Target]) -> list[str]:
    rows = ["| Target | Measured | Met |", "|---|---|---|"]
    rows += [f"| {t.text} | {t.measured} | {'met' if t.met else 'not met'} |" for t in listed]
    return rows


def seeding_line(rates: list[float], scanned: int) -> str:
    """How fast the history went in through the API at its start and at its end."""
    if not rates:
        return "The long conversations' history was written with COPY."
    return (
        "The long conversations' history was appended through the API (`add_message`, concurrency 16) into the "
        f"fresh database, without statistics: {rates[0]:,.0f} messages/s over the first 2,000, {rates[-1]:,.0f} "
        f"over the last (slowest 2,000: {min(rates):,.0f}/s), reading `conversations` whole {scanned:,} times; "
        "then ANALYZE."
    )


def write_markdown(results: list[Result], facts: dict[str, Any], sizes: Sizes, listed: list[Target]) -> None:
    write_section(
        "conversations",
        [
            "## Conversations (`bench/conversations.py`)",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {environment(PACKAGES)}; {facts['server']} on 127.0.0.1 "
            f"over TCP; every system on a pool of {POOL_SIZE} connections. The peer runs as documented (psycopg's "
            "default connections: its own COMMIT after a write, the pool's after a read) and in autocommit. Appends go to "
            f"{sizes.users:,} users × {sizes.conversations_per_user} conversations, "
            f"{sizes.hot_share:.0%} of them to {sizes.hot_conversations} busy conversations (so that some calls wait "
            "on the same row); texts, types and token counts are the Portuguese aviation corpus's. The floor is the "
            "same writes (message with seq = counter + 1, the conversation's counters, the audit row) as one "
            "hand-written statement on asyncpg; the peer writes one row and keeps no counters. `get_context` reads "
            f"{facts['returned']} of {sizes.history:,} messages (max_tokens={facts['budget']:,}); the peer reads a "
            f"{facts['peer_returned']}-message session. Imports are {sizes.import_rows:,} rows into a fresh "
            "conversation per call. Background compression (STRATUS_SUMMARY_THRESHOLD_TOKENS) is off. Contenders take "
            "turns in slices within one run: read the ratios, not the "
            "last digit. " + seeding_line(*facts["seeding"]),
            "",
            *results_table(results, throughput_header="Throughput"),
            "",
            "### Conversation targets (issue 4) against the run above",
            "",
            *targets_table(listed),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--conversations-per-user", type=int, default=3)
    parser.add_argument("--hot-conversations", type=int, default=32, help="the busy conversations")
    parser.add_argument("--hot-share", type=float, default=0.5, help="share of appends that go to them")
    parser.add_argument("--append-ops", type=int, default=6000, help="appends per system at concurrency 16")
    parser.add_argument("--history", type=int, default=1000, help="messages in a long conversation")
    parser.add_argument("--window", type=int, default=100, help="messages get_context's budget holds")
    parser.add_argument("--long-conversations", type=int, default=16)
    parser.add_argument(
        "--read-ops", type=int, default=3000, help="context reads per system at concurrency 16"
    )
    parser.add_argument("--import-rows", type=int, default=1000, help="messages per import call")
    parser.add_argument("--imports", type=int, default=32, help="import calls per system at concurrency 16")
    parser.add_argument("--rounds", type=int, default=3, help="slices the contenders take turns in")
    parser.add_argument(
        "--seed",
        choices=("api", "copy"),
        default="api",
        help="append the long conversations' history through the public API (default) or write it with COPY",
    )
    parser.add_argument("--seed-only", action="store_true", help="stop after seeding (implies --no-write)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument(
        "--without-message-search",
        action="store_true",
        help="an experiment (implies --no-write): messages are not indexed for full-text search, for any system",
    )
    arguments = parser.parse_args()
    sizes = Sizes(
        users=arguments.users,
        conversations_per_user=arguments.conversations_per_user,
        hot_conversations=min(
            arguments.hot_conversations, arguments.users * arguments.conversations_per_user
        ),
        hot_share=arguments.hot_share,
        append_ops=arguments.append_ops,
        history=arguments.history,
        window=min(arguments.window, arguments.history),
        long_conversations=arguments.long_conversations,
        read_ops=arguments.read_ops,
        import_rows=arguments.import_rows,
        imports=arguments.imports,
        rounds=arguments.rounds,
    )
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    results, facts = asyncio.run(
        run(
            sizes,
            through_api=arguments.seed == "api",
            seed_only=arguments.seed_only,
            without_message_search=arguments.without_message_search,
        )
    )
    if arguments.seed_only:
        return
    listed = targets(results)
    print()
    for line in targets_table(listed):
        print(line)
    if not (arguments.no_write or arguments.without_message_search):
        write_markdown(results, facts, sizes, listed)
        print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
