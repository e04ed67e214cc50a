"""The migrations build the schema the models describe, on both backends, and can be walked down and up again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, make_url
from sqlalchemy import text as sql_text
from sqlalchemy.ext.asyncio import AsyncConnection

from stratus_db import Database, UserManager
from stratus_db.models import Base
from stratus_db.schema import alembic_config, current_revision, head_revision, include_name, schema_drift
from tests.fixtures.databases import settings_for, sqlite_url, throwaway_postgres_database
from tests.fixtures.factories import audit_partitions


@asynccontextmanager
async def schema_transaction(db: Database) -> AsyncIterator[AsyncConnection]:
    """A transaction to walk the migrations in by hand, as `db.migrate` runs them: on SQLite with foreign keys off
    (revision 0009 rebuilds `users`, which with them on would cascade to every row that references it)."""
    async with db.engine.connect() as conn, db._backend.schema_change(conn), conn.begin():
        yield conn


def _downgrade_to_base(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


async def _check_migrations(url: str) -> None:
    db = Database(settings_for(url))
    try:
        assert await db.migrate() == head_revision()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_drift) == [], (
                "models and migrations disagree: write a migration"
            )
            assert await conn.run_sync(current_revision) == head_revision()
            tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
        model_tables = {name for name in tables if include_name(name, "table", None)}
        assert model_tables == set(Base.metadata.tables)
        assert "alembic_version" in tables
        if db.backend == "sqlite":
            assert {"memory_entries_fts", "memory_entries_fts_trigram"} <= tables

        async with schema_transaction(db) as conn:
            await conn.run_sync(_downgrade_to_base)
        async with db.engine.connect() as conn:
            assert await conn.run_sync(lambda sync: inspect(sync).get_table_names()) == ["alembic_version"]

        await db.migrate()
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_drift) == []
    finally:
        await db.close()


async def test_postgres_migrations_match_the_models_and_walk_down_and_up() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _check_migrations(url)


async def test_sqlite_migrations_match_the_models_and_walk_down_and_up(tmp_path: Path) -> None:
    await _check_migrations(sqlite_url(tmp_path / "migrations.db"))


async def _rows_stored_before_search_become_searchable(url: str) -> None:
    """Memories (revision 0002) and messages (0003) written under revision 0001 are found after the upgrade."""
    from sqlalchemy import text as sql

    from stratus_db import ConversationManager, MemoryManager

    db = Database(settings_for(url))
    try:
        async with schema_transaction(db) as conn:

            def to_0001(connection: Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "0001")

            await conn.run_sync(to_0001)
            user_id, memory_id = uuid.uuid4(), uuid.uuid4()

            def uuid_value(value: uuid.UUID) -> object:
                return value.hex if db.backend == "sqlite" else value

            now = "2026-01-01 00:00:00" if db.backend == "sqlite" else datetime.now(UTC)
            await conn.execute(
                sql(
                    "INSERT INTO users (user_id, name, email, role, licenses, preferences, created_at, updated_at, "
                    "last_active) VALUES (:u, 'Ana', 'ana@aero.com.br', 'pilot', '[]', '{}', :t, :t, :t)"
                ),
                {"u": uuid_value(user_id), "t": now},
            )
            await conn.execute(
                sql(
                    "INSERT INTO memory_entries (memory_id, user_id, memory_type, key, value, importance_score, "
                    "access_count, created_at, updated_at) VALUES (:m, :u, 'long_term', 'base', '\"SBGR Guarulhos\"', "
                    "0.5, 0, :t, :t)"
                ),
                {"m": uuid_value(memory_id), "u": uuid_value(user_id), "t": now},
            )
            conversation_id, message_id = uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                sql(
                    "INSERT INTO conversations (conversation_id, user_id, status, context, message_count, "
                    "total_tokens, created_at, updated_at, last_activity_at) "
                    "VALUES (:c, :u, 'active', '{}', 1, 9, :t, :t, :t)"
                ),
                {"c": uuid_value(conversation_id), "u": uuid_value(user_id), "t": now},
            )
            await conn.execute(
                sql(
                    "INSERT INTO messages (message_id, conversation_id, user_id, seq, message_type, content, "
                    "metadata, tokens_used, created_at) "
                    "VALUES (:m, :c, :u, 1, 'user_input', 'Previsão meteorológica para Guarulhos', '{}', 9, :t)"
                ),
                {
                    "m": uuid_value(message_id),
                    "c": uuid_value(conversation_id),
                    "u": uuid_value(user_id),
                    "t": now,
                },
            )
        await db.migrate()
        found = await MemoryManager(db).search_memories(user_id, "guarulhos")
        assert [result.memory.memory_id for result in found] == [memory_id]
        hits = await ConversationManager(db).search_messages(user_id, "meteorologia")
        assert [hit.message.message_id for hit in hits] == [message_id]
        conversation = await ConversationManager(db).get_conversation(conversation_id, user_id)
        assert conversation is not None
        assert (conversation.summarized_through_seq, conversation.summarized_tokens) == (0, 0)
    finally:
        await db.close()


async def test_postgres_upgrade_makes_existing_memories_and_messages_searchable() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _rows_stored_before_search_become_searchable(url)


async def test_sqlite_upgrade_makes_existing_memories_and_messages_searchable(tmp_path: Path) -> None:
    await _rows_stored_before_search_become_searchable(sqlite_url(tmp_path / "upgrade.db"))


async def _search_survives_revision_0004_both_ways(url: str) -> None:
    """A memory stored under revision 0003 is found by words and by a typo after 0004, its vector follows a new value
    (kept by the trigger, no longer generated), and after a downgrade to 0003 the (again generated) index finds it."""
    from stratus_db import MemoryManager
    from stratus_db.kit.text import search_text

    def walk(target: str, *, down: bool = False) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, target)

        return run

    db = Database(settings_for(url))
    try:
        user_id = uuid.uuid4()

        def uuid_value(value: uuid.UUID) -> object:
            return value.hex if db.backend == "sqlite" else value

        now = "2026-01-01 00:00:00" if db.backend == "sqlite" else datetime.now(UTC)
        async with schema_transaction(db) as conn:
            await conn.run_sync(walk("0003"))
            await conn.execute(
                sql_text(
                    "INSERT INTO users (user_id, name, email, role, licenses, preferences, created_at, updated_at, "
                    "last_active) VALUES (:u, 'Ana', 'ana@aero.com.br', 'pilot', '[]', '{}', :t, :t, :t)"
                ),
                {"u": uuid_value(user_id), "t": now},
            )
            await conn.execute(
                sql_text(
                    "INSERT INTO memory_entries (memory_id, user_id, memory_type, key, value, importance_score, "
                    "access_count, created_at, updated_at, search_text) VALUES (:m, :u, 'long_term', 'base', "
                    "'\"SBGR Guarulhos\"', 0.5, 0, :t, :t, :s)"
                ),
                {
                    "m": uuid_value(uuid.uuid4()),
                    "u": uuid_value(user_id),
                    "t": now,
                    "s": search_text("base", "SBGR Guarulhos"),
                },
            )

        async with schema_transaction(db) as conn:
            await conn.run_sync(walk("head"))
        memories = MemoryManager(db)
        for query in ("guarulhos", "Guarulos", "SBGR"):
            assert [r.memory.key for r in await memories.search_memories(user_id, query)] == ["base"], query
        await memories.store_memory(user_id, "base", "SBKP Viracopos")
        assert await memories.search_memories(user_id, "guarulhos") == []
        assert [r.memory.key for r in await memories.search_memories(user_id, "viracopos")] == ["base"]

        async with schema_transaction(db) as conn:
            await conn.run_sync(walk("0003", down=True))
            if db.backend == "postgresql":
                generated = await conn.scalar(
                    sql_text(
                        "SELECT attgenerated::text FROM pg_attribute "
                        "WHERE attrelid = 'memory_entries'::regclass AND attname = 'search_vector'"
                    )
                )
                assert generated == "s"
                found = sql_text(
                    "SELECT key FROM memory_entries "
                    "WHERE search_vector @@ to_tsquery('stratus_portuguese', 'viracopos')"
                )
            else:
                found = sql_text(
                    "SELECT key FROM memory_entries WHERE rowid IN "
                    "(SELECT rowid FROM memory_entries_fts WHERE memory_entries_fts MATCH 'viracopos')"
                )
            assert (await conn.execute(found)).scalars().all() == ["base"]
    finally:
        await db.close()


async def test_postgres_revision_0004_keeps_memories_searchable_up_and_down() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _search_survives_revision_0004_both_ways(url)


async def test_sqlite_revision_0004_keeps_memories_searchable_up_and_down(tmp_path: Path) -> None:
    await _search_survives_revision_0004_both_ways(sqlite_url(tmp_path / "revision-0004.db"))


async def _search_survives_revision_0005_both_ways(url: str) -> None:
    """Memories and messages stored under revision 0004, an archived (packed) message among them, whose text only
    SQLite's FTS table still holds, are found after 0005 by their owner only; on SQLite the search index itself now
    answers by owner; and after a downgrade to 0004 (and up again) they are still found."""
    from stratus_db import ConversationManager, MemoryManager
    from stratus_db.conversations.packing import pack
    from stratus_db.kit.text import search_text

    def walk(target: str, *, down: bool = False) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(config, target)

        return run

    db = Database(settings_for(url))
    owner, stranger = uuid.uuid4(), uuid.uuid4()

    def uuid_value(value: uuid.UUID) -> object:
        return value.hex if db.backend == "sqlite" else value

    now = "2026-01-01 00:00:00" if db.backend == "sqlite" else datetime.now(UTC)
    try:
        async with schema_transaction(db) as conn:
            await conn.run_sync(walk("0004"))
            for index, user_id in enumerate((owner, stranger)):
                await conn.execute(
                    sql_text(
                        "INSERT INTO users (user_id, name, email, role, licenses, preferences, created_at, "
                        "updated_at, last_active) VALUES (:u, 'Ana', :e, 'pilot', '[]', '{}', :t, :t, :t)"
                    ),
                    {"u": uuid_value(user_id), "e": f"ana{index}@aero.com.br", "t": now},
                )
                await conn.execute(
                    sql_text(
                        "INSERT INTO memory_entries (memory_id, user_id, memory_type, key, value, importance_score, "
                        "access_count, created_at, updated_at, search_text) VALUES (:m, :u, 'long_term', 'base', "
                        "'\"SBGR Guarulhos 1\"', 0.5, 0, :t, :t, :s)"
                    ),
                    {
                        "m": uuid_value(uuid.uuid4()),
                        "u": uuid_value(user_id),
                        "t": now,
                        "s": search_text("base", "SBGR Guarulhos 1"),
                    },
                )
                conversation_id = uuid.uuid4()
                await conn.execute(
                    sql_text(
                        "INSERT INTO conversations (conversation_id, user_id, status, context, message_count, "
                        "total_tokens, created_at, updated_at, last_activity_at) "
                        "VALUES (:c, :u, 'archived', '{}', 2, 18, :t, :t, :t)"
                    ),
                    {"c": uuid_value(conversation_id), "u": uuid_value(user_id), "t": now},
                )
                for seq, content in enumerate(
                    ["Previsão meteorológica para Guarulhos", "Pressão de óleo do Cessna 172"], start=1
                ):
                    await conn.execute(
                        sql_text(
                            "INSERT INTO messages (message_id, conversation_id, user_id, seq, message_type, "
                            "content, metadata, tokens_used, created_at) "
                            "VALUES (:m, :c, :u, :s, 'user_input', :content, '{}', 9, :t)"
                        ),
                        {
                            "m": uuid_value(uuid.uuid4()),
                            "c": uuid_value(conversation_id),
                            "u": uuid_value(user_id),
                            "s": seq,
                            "content": content,
                            "t": now,
                        },
                    )
                # Archived as archive_conversation(pack=True) does: the body leaves `content`.
                await conn.execute(
                    sql_text(
                        "UPDATE messages SET packed_content = :packed, content = NULL "
                        "WHERE conversation_id = :c AND seq = 2"
                    ),
                    {"packed": pack("Pressão de óleo do Cessna 172"), "c": uuid_value(conversation_id)},
                )

        async def found_by_owner() -> None:
            memories, conversations = MemoryManager(db), ConversationManager(db)
            for query in ("guarulhos", "Guarulos", "1"):
                results = await memories.search_memories(owner, query)
                assert [(r.memory.user_id, r.memory.key) for r in results] == [(owner, "base")], query
            for query, content in [
                ("meteorologia", "Previsão meteorológica para Guarulhos"),
                ("cessna", "Pressão de óleo do Cessna 172"),
            ]:
                hits = await conversations.search_messages(owner, query)
                assert [(hit.message.user_id, hit.message.content) for hit in hits] == [(owner, content)], (
                    query
                )

        async with schema_transaction(db) as conn:
            await conn.run_sync(walk("head"))
            if db.backend == "sqlite":
                for table, count in [
                    ("memory_entries_fts", 1),
                    ("memory_entries_fts_trigram", 1),
                    ("messages_fts", 2),
                ]:
                    owned = await conn.execute(
                        sql_text(f"SELECT count(*) FROM {table} WHERE {table} MATCH :owner"),
                        {"owner": f'user_id : "{owner.hex}"'},
                    )
                    assert owned.scalar_one() == count, table
        await found_by_owner()

        async with schema_transaction(db) as conn:
            await conn.run_sync(walk("0004", down=True))
            if db.backend == "sqlite":
                packed = await conn.execute(
                    sql_text("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'cessna'")
                )
                assert packed.scalar_one() == 2
        async with schema_transaction(db) as conn:
            await conn.run_sync(walk("head"))
        await found_by_owner()
    finally:
        await db.close()


async def test_postgres_revision_0005_keeps_search_by_owner_up_and_down() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _search_survives_revision_0005_both_ways(url)


async def test_sqlite_revision_0005_puts_the_owner_in_the_search_index_up_and_down(tmp_path: Path) -> None:
    await _search_survives_revision_0005_both_ways(sqlite_url(tmp_path / "revision-0005.db"))


async def _licenses_become_credentials(url: str) -> None:
    """Revision 0006 turns each user's licenses into credentials: a list the catalogue reads is rewritten canonical;
    one it refuses keeps its text, and the codes accepted one by one become credentials."""
    from sqlalchemy import text as sql

    db = Database(settings_for(url))
    try:
        async with schema_transaction(db) as conn:

            def to_0005(connection: Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "0005")

            await conn.run_sync(to_0005)
            now = "2026-01-01 00:00:00" if db.backend == "sqlite" else datetime.now(UTC)
            for user_id, email, licenses in (
                (uuid.UUID(int=1), "ana@aero.com.br", '["PP", "PC", "IFR"]'),
                (uuid.UUID(int=2), "bia@aero.com.br", '["PLA/IFR", "mlte"]'),
            ):
                await conn.execute(
                    sql(
                        "INSERT INTO users (user_id, name, email, role, licenses, preferences, created_at, "
                        "updated_at, last_active) VALUES (:u, 'Ana', :e, 'pilot', :l, '{}', :t, :t, :t)"
                    ),
                    {
                        "u": user_id.hex if db.backend == "sqlite" else user_id,
                        "e": email,
                        "l": licenses,
                        "t": now,
                    },
                )
        await db.migrate()
        users = UserManager(db)
        first, second = await users.get_user(uuid.UUID(int=1)), await users.get_user(uuid.UUID(int=2))
        assert first is not None
        assert second is not None
        assert first.licenses == ["PPR", "PCM", "IFRA"]
        assert second.licenses == ["PLA/IFR", "mlte"]
        status = await users.credential_status(first.user_id)
        assert [s.credential.code for s in status] == ["PCM", "PPR", "IFRA"]
        assert [s.credential.code for s in await users.credential_status(second.user_id)] == ["MLTE"]
    finally:
        await db.close()


async def test_postgres_0006_turns_licenses_into_credentials() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _licenses_become_credentials(url)


async def test_sqlite_0006_turns_licenses_into_credentials(tmp_path: Path) -> None:
    await _licenses_become_credentials(sqlite_url(tmp_path / "credentials.db"))


async def _profile_fields_up_and_down(url: str) -> None:
    """Revision 0007 marks the expiries stored under 0006 `recorded` (they were given by callers) and computes none;
    birth dates, CANACs and deactivations then work; the downgrade clears the computed expiries (derived from the
    birth dates it drops) and keeps the recorded ones, and the upgrade runs again over that."""
    from datetime import date

    from sqlalchemy import text as sql

    from stratus_db.errors import ConflictError

    db = Database(settings_for(url))
    ana, bia = uuid.UUID(int=1), uuid.UUID(int=2)

    def key(value: uuid.UUID) -> object:
        return value.hex if db.backend == "sqlite" else value

    async def expiries() -> dict[str, tuple[object, ...]]:
        async with db.engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("user_credentials")}
            )
            basis = "expiry_basis" if "expiry_basis" in columns else "NULL"
            rows = await conn.execute(sql(f"SELECT code, expires_at, {basis} FROM user_credentials"))
            return {row[0]: (str(row[1]) if row[1] is not None else None, row[2]) for row in rows}

    try:
        async with schema_transaction(db) as conn:

            def to_0006(connection: Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "0006")

            await conn.run_sync(to_0006)
            now = "2026-01-01 00:00:00" if db.backend == "sqlite" else datetime.now(UTC)
            for user_id, email in ((ana, "ana@aero.com.br"), (bia, "bia@aero.com.br")):
                await conn.execute(
                    sql(
                        "INSERT INTO users (user_id, name, email, role, licenses, preferences, created_at, "
                        "updated_at, last_active) VALUES (:u, 'Ana', :e, 'pilot', '[\"CMA1\", \"CMA2\"]', '{}', "
                        ":t, :t, :t)"
                    ),
                    {"u": key(user_id), "e": email, "t": now},
                )
            for index, (code, issued, expires) in enumerate(
                (("CMA1", date(2026, 1, 10), date(2026, 6, 30)), ("CMA2", date(2026, 1, 10), None))
            ):
                await conn.execute(
                    sql(
                        "INSERT INTO user_credentials (credential_id, user_id, code, kind, issued_at, expires_at, "
                        "created_at, updated_at) VALUES (:c, :u, :code, 'medical', :i, :x, :t, :t)"
                    ),
                    {
                        "c": key(uuid.UUID(int=100 + index)),
                        "u": key(ana),
                        "code": code,
                        "i": issued,
                        "x": expires,
                        "t": now,
                    },
                )
        await db.migrate()
        assert await expiries() == {"CMA1": ("2026-06-30", "recorded"), "CMA2": (None, None)}

        users = UserManager(db)
        updated = await users.update_user(ana, birth_date=date(1990, 1, 10), canac="123456")
        assert (updated.birth_date, updated.canac, updated.deactivated_at) == (
            date(1990, 1, 10),
            "123456",
            None,
        )
        # Aged 36 on the exam: a 2nd class certificate is valid 60 months; the recorded 1st class one stays.
        assert await expiries() == {"CMA1": ("2026-06-30", "recorded"), "CMA2": ("2031-01-10", "computed")}
        with pytest.raises(ConflictError, match="canac"):
            await users.update_user(bia, canac="123456")
        assert (await users.deactivate_user(bia, "teste")).deactivated_at is not None
        assert [user.user_id for user in (await users.list_users(credential_code="CMA-2")).items] == [ana]

        assert await db.downgrade("0006") == "0006"
        assert await expiries() == {"CMA1": ("2026-06-30", None), "CMA2": (None, None)}
        async with db.engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("users")}
            )
            indexes = await conn.run_sync(
                lambda sync: {i["name"] for i in inspect(sync).get_indexes("users")}
            )
        assert not {"birth_date", "canac", "deactivated_at"} & columns
        assert not {"ix_users_canac", "ix_users_experience_level_user_id", "ix_users_last_active"} & indexes
        assert "ix_users_role_user_id" in indexes

        await db.migrate()
        assert await expiries() == {"CMA1": ("2026-06-30", "recorded"), "CMA2": (None, None)}
        async with db.engine.connect() as conn:
            assert await conn.run_sync(schema_drift) == []
    finally:
        await db.close()


async def test_postgres_0007_profile_fields_up_and_down() -> None:
    async with throwaway_postgres_database(migrate=False) as url:
        await _profile_fields_up_and_down(url)


async def test_sqlite_0007_profile_fields_up_and_down(tmp_path: Path) -> None:
    await _profile_fields_up_and_down(sqlite_url(tmp_path / "profile-fields.db"))


async def test_postgres_0013_partitions_the_audit_trail_by_month_up_and_down() -> None:
    """Revision 0013 moves the audit rows written before it into month partitions (one per month they are in, and
    this month and the next two), keeps every row as it was, and the trail sealed after it verifies; the downgrade
    puts the same rows back into a plain table."""
    from stratus_db import AuditManager

    async with throwaway_postgres_database(migrate=False) as url:
        db = Database(settings_for(url))
        try:
            async with schema_transaction(db) as conn:

                def to_0012(connection: Connection) -> None:
                    config = alembic_config()
                    config.attributes["connection"] = connection
                    command.upgrade(config, "0012")

                await conn.run_sync(to_0012)
                # Each a UTC month's last or first half hour: in São Paulo's time (the database's, below), the
                # December row is still in November.
                for moment in (
                    datetime(2025, 9, 30, 23, 30, tzinfo=UTC),
                    datetime(2025, 10, 31, 23, 30, tzinfo=UTC),
                    datetime(2025, 11, 30, 23, 30, tzinfo=UTC),
                    datetime(2025, 12, 1, 0, 30, tzinfo=UTC),
                ):
                    await conn.execute(
                        sql_text(
                            "INSERT INTO audit_log (audit_id, action, table_name, timestamp, actor, new_values) "
                            "VALUES (:id, 'create', 'users', :at, 'system:system', '{\"n\": 1}')"
                        ),
                        {"id": uuid.uuid4(), "at": moment},
                    )
                database = make_url(url).database
                await conn.execute(
                    sql_text(f"ALTER DATABASE \"{database}\" SET TimeZone = 'America/Sao_Paulo'")
                )
            await db.engine.dispose()  # new connections take the database's time zone

            async def rows() -> list[tuple[object, ...]]:
                async with db.engine.connect() as conn:
                    found = await conn.execute(
                        sql_text("SELECT audit_id, timestamp, new_values FROM audit_log ORDER BY timestamp")
                    )
                    return [tuple(row) for row in found]

            before = await rows()
            await db.migrate()
            assert await rows() == before
            now = datetime.now(UTC)
            months = {(now.year * 12 + now.month - 1 + ahead) for ahead in range(3)}
            expected = {f"audit_log_{m // 12}_{m % 12 + 1:02d}": 0 for m in months} | {
                "audit_log_2025_09": 1,
                "audit_log_2025_10": 1,
                "audit_log_2025_11": 1,
                "audit_log_2025_12": 1,
            }
            assert await audit_partitions(db) == expected | {"audit_log_default": 0}
            async with db.engine.connect() as conn:
                assert await conn.run_sync(schema_drift) == []

            await UserManager(db).create_user(name="Ana", email="ana@example.com", role="pilot")
            trail = AuditManager(db)
            await trail.seal()
            assert (await trail.verify()).ok

            after = await rows()
            assert await db.downgrade("0012") == "0012"
            assert await rows() == after
            assert after[:4] == before
            assert len(after) == 5
            async with db.engine.connect() as conn:
                assert await audit_partitions(db) == {}
                primary = await conn.run_sync(lambda sync: inspect(sync).get_pk_constraint("audit_log"))
            assert primary["constrained_columns"] == ["audit_id"]
            await db.migrate()
            assert len(await rows()) == 5
            assert (await trail.verify()).ok
        finally:
            await db.close()
