"""Plans that do not depend on statistics (PostgreSQL).

This project's PostgreSQL runs without autovacuum, so tables that grow through the API have no statistics, and every
pooled connection keeps the generic plan it made for a statement (kit/backends.py forces generic plans) the first time
it sent it, often while the tables were empty. The hot paths must read by index whatever the tables looked like
then; the bulk paths leave the tables they changed analyzed. Each test has a throw-away database of its own, never
analyzed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import asyncpg

from stratus_db import ConversationManager, Database, MemoryEntry, MemoryManager, UserManager
from stratus_db.audit.rows import audit_context
from stratus_db.conversations.plans import NewMessage, message_audit
from stratus_db.conversations.repository import appends_statement
from stratus_db.kit.backends import PostgresBackend
from stratus_db.kit.ids import new_id
from stratus_db.memory.repository import (
    apply_updates_statement,
    count_live_statement,
    create_statement,
    lock_owners_statement,
    read_keys_statement,
)
from stratus_db.models import MemoryType, MessageType
from tests.fixtures.clock import ManualClock
from tests.fixtures.databases import settings_for, throwaway_postgres_database

T = TypeVar("T")
TABLES = ("users", "memory_entries", "conversations", "messages")
"""The tables the hot paths read rows of."""


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg", "postgresql")


async def _at_concurrency_16(count: int, call: Callable[[int], Awaitable[T]]) -> list[T]:
    """`call(0)` … `call(count - 1)`, sixteen at a time, as a pool of sixteen connections serves them."""
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> T:
        async with gate:
            return await call(index)

    return list(await asyncio.gather(*(one(index) for index in range(count))))


async def _sequential_scans(url: str) -> dict[str, int]:
    """`pg_stat_user_tables.seq_scan` of TABLES, read once every other connection to the database has ended: a
    server process reports its counts when it exits."""
    connection = await asyncpg.connect(_plain(url))
    try:
        others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        # The server announces no process's exit: ask until the closed connections' processes are gone.
        while await connection.fetchval(others):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        rows = await connection.fetch(
            "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname = ANY($1::text[])", list(TABLES)
        )
    finally:
        await connection.close()
    return {row["relname"]: row["seq_scan"] for row in rows}


def _store(
    memories: MemoryManager, owners: list[uuid.UUID], value: str, index: int
) -> Awaitable[MemoryEntry]:
    """Store number `index`: key number index // owners of owner number index % owners."""
    return memories.store_memory(
        owners[index % len(owners)], f"chave_{index // len(owners)}", f"{value} {index}"
    )


async def test_writing_through_the_api_into_fresh_tables_never_reads_a_table_whole() -> None:
    async with throwaway_postgres_database() as url:
        before = await _sequential_scans(url)
        db = Database(
            settings_for(url).model_copy(update={"STRATUS_POOL_SIZE": 16, "STRATUS_POOL_MAX_OVERFLOW": 0})
        )
        try:
            users, memories, conversations = UserManager(db), MemoryManager(db), ConversationManager(db)
            created = await _at_concurrency_16(
                100, lambda i: users.create_user(f"Piloto {i}", f"piloto{i}@voo.br", "pilot")
            )
            # New keys from the first store on (their batches plan their statements on an empty table), then
            # updates of the same keys, then appends to new conversations.
            for value in ("METAR SBGR", "TAF SBKP"):
                await _at_concurrency_16(
                    2000, partial(_store, memories, [user.user_id for user in created], value)
                )
            chats = await _at_concurrency_16(
                100, lambda i: conversations.create_conversation(created[i].user_id, "Consulta")
            )
            await _at_concurrency_16(
                2000,
                lambda i: conversations.add_message(
                    chats[i % 100].conversation_id, chats[i % 100].user_id, f"Qual o METAR? {i}", "user_input"
                ),
            )
        finally:
            await db.close()
        after = await _sequential_scans(url)

    assert {table: after[table] - before[table] for table in TABLES} == dict.fromkeys(TABLES, 0)


def _batch_statements() -> dict[str, tuple[str, int]]:
    """The statements the coalesced writers send, as their builders make them: text and number of parameters."""
    now = ManualClock()()
    owner, conversation = new_id(), new_id()
    message = NewMessage(
        message_id=new_id(),
        conversation_id=conversation,
        user_id=owner,
        agent_name=None,
        message_type=MessageType.user_input,
        content="Qual o METAR?",
        metadata={},
        tokens_used=3,
        response_time=None,
        created_at=now,
    )
    appends = [(message, message_audit(message, audit_context()))] * 2
    built = {
        "read_keys": read_keys_statement([owner], ["chave"]),
        "apply_updates": apply_updates_statement([], now=now, channel="canal"),
        "lock_owners": lock_owners_statement([owner], lock_timeout="50ms"),
        "count_live": count_live_statement([owner], now, exclude_tier=MemoryType.critical),
        "create": create_statement([], now=now, channel="canal"),
        "appends": appends_statement(appends),
    }
    return {name: (sql, len(arguments)) for name, (sql, arguments) in built.items()}


def _scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan that reads rows of one of TABLES (not those that write them)."""
    if node.get("Relation Name") in TABLES and node["Node Type"].endswith("Scan"):
        yield node
    for child in node.get("Plans", []):
        yield from _scans(child)


async def _generic_plans(url: str) -> dict[str, list[dict[str, Any]]]:
    """The scans of each batch statement's generic plan, made now, on a connection set up as the library's are."""
    server_settings = PostgresBackend().engine_options(settings_for(url))["connect_args"]["server_settings"]
    connection = await asyncpg.connect(_plain(url), server_settings=server_settings)
    plans = {}
    try:
        for name, (sql, parameters) in _batch_statements().items():
            await connection.execute(f"PREPARE batch AS {sql}")
            # A generic plan holds for any values: NULLs do.
            explained = await connection.fetchval(
                f"EXPLAIN (FORMAT JSON) EXECUTE batch({', '.join(['NULL'] * parameters)})"
            )
            await connection.execute("DEALLOCATE batch")
            plans[name] = list(_scans(json.loads(explained)[0]["Plan"]))
    finally:
        await connection.close()
    return plans


async def test_the_batch_statements_read_by_index_whatever_the_tables_held_when_planned() -> None:
    states = {}
    async with throwaway_postgres_database() as url:
        states["empty"] = await _generic_plans(url)
        connection = await asyncpg.connect(_plain(url))
        try:
            await connection.execute(
                """
                INSERT INTO users (user_id, name, email, email_index, role, licenses, preferences, created_at, updated_at,
                                   last_active)
                SELECT gen_random_uuid(), 'Piloto', 'piloto' || n || '@voo.br', md5('piloto' || n), 'pilot', '[]', '{}', now(), now(),
                       now()
                FROM generate_series(1, 300) AS n;
                INSERT INTO memory_entries (memory_id, user_id, memory_type, key, value, importance_score,
                                            access_count, created_at, updated_at, search_text)
                SELECT gen_random_uuid(), user_id, 'long_term', 'chave_' || n, '"valor"', 0.5, 0, now(), now(),
                       'chave valor'
                FROM users, generate_series(1, 100) AS n;
                INSERT INTO conversations (conversation_id, user_id, title, status, context, message_count,
                                           total_tokens, created_at, updated_at, last_activity_at)
                SELECT gen_random_uuid(), user_id, 'Consulta', 'active', '{}', 0, 0, now(), now(), now()
                FROM users, generate_series(1, 3);
                """
            )
            states["grown, never analyzed"] = await _generic_plans(url)
            await connection.execute("ANALYZE")
            states["analyzed"] = await _generic_plans(url)
        finally:
            await connection.close()

    for plans in states.values():
        assert {
            name: [scan["Relation Name"] for scan in scans if scan["Node Type"] == "Seq Scan"]
            for name, scans in plans.items()
        } == {name: [] for name in plans}
        # An update reaches its row by a unique key, not by walking its owner's memories.
        assert all(
            "memory_id" in scan.get("Index Cond", "") or "key" in scan.get("Index Cond", "")
            for scan in plans["apply_updates"]
        )
        # Counting an owner's memories reads that owner's entries only, not every memory without an expiry.
        assert all(scan.get("Index Name") != "ix_memory_entries_expires_at" for scan in plans["count_live"])


async def _statistics(url: str, table: str) -> tuple[float, int, bool]:
    """The planner's row count of `table` (pg_class.reltuples, -1 before any ANALYZE), its live rows, and whether
    it has ever been analyzed."""
    connection = await asyncpg.connect(_plain(url))
    try:
        row = await connection.fetchrow(
            f"SELECT c.reltuples, (SELECT count(*) FROM {table}) AS live, s.last_analyze IS NOT NULL AS analyzed"
            " FROM pg_class AS c JOIN pg_stat_user_tables AS s ON s.relid = c.oid WHERE c.relname = $1",
            table,
        )
    finally:
        await connection.close()
    assert row is not None
    return row["reltuples"], row["live"], row["analyzed"]


async def test_an_import_leaves_the_messages_analyzed_and_a_small_one_does_not_analyze() -> None:
    async with throwaway_postgres_database() as url:
        db = Database(settings_for(url))
        try:
            user = await UserManager(db).create_user("Piloto", "piloto@voo.br", "pilot")
            conversations = ConversationManager(db)
            chat = await conversations.create_conversation(user.user_id, "Histórico")
            message = {"content": "Qual o METAR de SBGR?", "message_type": "user_input"}
            await conversations.import_messages(chat.conversation_id, user.user_id, [message] * 200)
            assert await _statistics(url, "messages") == (-1, 200, False)

            await conversations.import_messages(chat.conversation_id, user.user_id, [message] * 1500)
        finally:
            await db.close()
        assert await _statistics(url, "messages") == (1700, 1700, True)


async def test_a_large_batch_of_messages_and_a_conversation_purge_leave_the_messages_analyzed() -> None:
    async with throwaway_postgres_database() as url:
        db = Database(settings_for(url))
        try:
            user = await UserManager(db).create_user("Piloto", "piloto@voo.br", "pilot")
            conversations = ConversationManager(db)
            kept, purged = [await conversations.create_conversation(user.user_id, "Voo") for _ in range(2)]
            message = {"content": "Qual o METAR de SBGR?", "message_type": "user_input"}
            await conversations.add_messages(kept.conversation_id, user.user_id, [message] * 1000)
            await conversations.add_messages(purged.conversation_id, user.user_id, [message] * 1000)
            assert await _statistics(url, "messages") == (2000, 2000, True)

            assert await conversations.purge_conversation(purged.conversation_id, user.user_id) == 1000
        finally:
            await db.close()
        assert await _statistics(url, "messages") == (1000, 1000, True)


async def test_a_purge_leaves_the_memories_analyzed() -> None:
    clock = ManualClock()
    async with throwaway_postgres_database() as url:
        db = Database(settings_for(url), clock=clock)
        try:
            owners = [
                (await UserManager(db).create_user(f"Piloto {i}", f"piloto{i}@voo.br", "pilot")).user_id
                for i in range(4)
            ]
            memories = MemoryManager(db)
            await _at_concurrency_16(
                500, lambda i: memories.store_memory(owners[i % 4], f"fica_{i}", "valor", "long_term")
            )
            await _at_concurrency_16(
                1200,
                lambda i: memories.store_memory(owners[i % 4], f"expira_{i}", "valor", "short_term", ttl=60),
            )
            clock.advance(minutes=2)
            assert await memories.purge_expired(batch_size=500) == 1200
        finally:
            await db.close()
        assert await _statistics(url, "memory_entries") == (500, 500, True)


async def test_expiring_credentials_reads_a_range_of_its_index_across_users() -> None:
    """30,000 credentials of 300 users: the keyset page of expiring_credentials is one range of
    ix_user_credentials_expires_at_credential_id, before and after ANALYZE, first page and later ones."""
    from datetime import date

    from sqlalchemy.dialects import postgresql

    from stratus_db.users.credential_repository import expiring_statement

    def explained_sql(after: tuple[date, uuid.UUID] | None) -> str:
        statement = expiring_statement(date(2026, 7, 1), date(2026, 7, 31), after, 51)
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        return f"EXPLAIN (FORMAT JSON) {compiled}"

    statements = [explained_sql(None), explained_sql((date(2026, 7, 10), uuid.UUID(int=0)))]
    async with throwaway_postgres_database() as url:
        connection = await asyncpg.connect(_plain(url))
        try:
            await connection.execute(
                """
                INSERT INTO users (user_id, name, email, email_index, role, licenses, preferences, created_at, updated_at,
                                   last_active)
                SELECT gen_random_uuid(), 'Piloto', 'piloto' || n || '@voo.br', md5('piloto' || n), 'pilot', '[]', '{}', now(), now(),
                       now()
                FROM generate_series(1, 300) AS n;
                INSERT INTO user_credentials (credential_id, user_id, code, kind, expires_at, expiry_basis,
                                              created_at, updated_at)
                SELECT gen_random_uuid(), user_id, 'TIPO:A' || n, 'rating', DATE '2026-01-01' + (n * 7 % 1000),
                       'recorded', now(), now()
                FROM users, generate_series(1, 100) AS n;
                """
            )
            plans = []
            for analyzed in (False, True):
                if analyzed:
                    await connection.execute("ANALYZE")
                for sql in statements:
                    plans.append(json.loads(await connection.fetchval(sql))[0]["Plan"])
        finally:
            await connection.close()

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    for plan in plans:
        read = [node for node in nodes(plan) if node["Node Type"].endswith("Scan")]
        # An index scan in key order, or a bitmap of the window's rows (a few hundred here) sorted for the page:
        # either reads the window's range of the index, never the table whole.
        assert [node["Node Type"] for node in read] in (
            ["Index Scan"],
            ["Bitmap Heap Scan", "Bitmap Index Scan"],
        )
        assert read[-1]["Index Name"] == "ix_user_credentials_expires_at_credential_id"


async def test_list_users_by_credential_code_reads_a_range_of_its_index() -> None:
    """100,000 users holding PPR, 500 of them PLA too, a fifth of them deactivated: list_users(credential_code=...)
    reads the holders from ix_user_credentials_code_user_id in user order and each user by key, first page and later
    ones, for a rare code and for one every user holds, once the tables are analyzed."""
    from sqlalchemy.dialects import postgresql

    from stratus_db.users.repository import page_statement

    def explained_sql(code: str, after: uuid.UUID | None) -> str:
        statement = page_statement(credential_code=code, after=after, limit=51)
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        return f"EXPLAIN (FORMAT JSON) {compiled}"

    middle = uuid.UUID("80000000-0000-7000-8000-000000000000")
    statements = {
        (code, after is not None): explained_sql(code, after)
        for code in ("PLA", "PPR")
        for after in (None, middle)
    }
    async with throwaway_postgres_database() as url:
        connection = await asyncpg.connect(_plain(url))
        try:
            await connection.execute(
                """
                INSERT INTO users (user_id, name, email, email_index, role, licenses, preferences, created_at, updated_at,
                                   last_active, deactivated_at)
                SELECT gen_random_uuid(), 'Piloto', 'piloto' || n || '@voo.br', md5('piloto' || n), 'pilot', '[]', '{}', now(), now(),
                       now(), CASE WHEN n % 5 = 0 THEN now() END
                FROM generate_series(1, 100000) AS n;
                INSERT INTO user_credentials (credential_id, user_id, code, kind, created_at, updated_at)
                SELECT gen_random_uuid(), user_id, 'PPR', 'licence', now(), now() FROM users;
                INSERT INTO user_credentials (credential_id, user_id, code, kind, created_at, updated_at)
                SELECT gen_random_uuid(), user_id, 'PLA', 'licence', now(), now()
                FROM users ORDER BY email LIMIT 500;
                ANALYZE;
                """
            )
            plans = {
                key: json.loads(await connection.fetchval(sql))[0]["Plan"] for key, sql in statements.items()
            }
        finally:
            await connection.close()

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    for (code, later), plan in plans.items():
        read = {
            node["Relation Name"] if "Relation Name" in node else node["Index Name"]: node
            for node in nodes(plan)
            if node["Node Type"].endswith("Scan")
        }
        kinds = {name: (node["Node Type"], node.get("Index Name")) for name, node in read.items()}
        assert "Seq Scan" not in {kind for kind, _index in kinds.values()}, (code, later, kinds)
        if code == "PLA":
            # The rare code: its range of the index, then each holder by key.
            assert ("Index Only Scan", "ix_user_credentials_code_user_id") in kinds.values() or (
                "Index Scan",
                "ix_user_credentials_code_user_id",
            ) in kinds.values(), (code, later, kinds)
            assert kinds["users"] == ("Index Scan", "pk_users"), (code, later, kinds)
