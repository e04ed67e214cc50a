"""PostgreSQL: the application's role (`grant_application_role`) does everything the library does, erasure and
retention included, yet may not UPDATE, DELETE or TRUNCATE the audit trail; the functions it rewrites the trail
through refuse what an erasure or a purge would not do."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import make_url, text

from stratus_db import (
    AuditManager,
    ConfigurationError,
    ConversationManager,
    Database,
    MemoryManager,
    PrivacyManager,
    UserManager,
    ValidationError,
)
from tests.fixtures.clock import ManualClock
from tests.fixtures.databases import application_role, settings_for, throwaway_postgres_database
from tests.fixtures.factories import create_user


@pytest.fixture
async def owner_and_application() -> AsyncIterator[tuple[Database, Database, str]]:
    """A fresh database migrated by its owner, a role granted the application's rights, and a handle of each."""
    async with application_role() as role, throwaway_postgres_database() as url:
        owner = Database(settings_for(url))
        await owner.grant_application_role(role)
        app_url = make_url(url).set(username=role).render_as_string(hide_password=False)
        application = Database(settings_for(app_url))
        try:
            yield owner, application, app_url
        finally:
            await application.close()
            await owner.close()


async def raw(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


async def test_the_application_role_works_and_cannot_rewrite_the_trail(
    owner_and_application: tuple[Database, Database, str],
) -> None:
    _owner, app, app_url = owner_and_application
    clock = ManualClock()
    app.clock = clock
    users, trail = UserManager(app), AuditManager(app)
    ana = await create_user(users)
    await MemoryManager(app).store_memory(ana.user_id, "base", "SBKP", "long_term")
    chat = await ConversationManager(app).create_conversation(ana.user_id, "Rota")
    await ConversationManager(app).add_message(chat.conversation_id, ana.user_id, "METAR SBKP?")
    bia = await create_user(users)
    await trail.seal()

    connection = await raw(app_url)
    try:
        assert (
            await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = session_user") is False
        )
        for statement in (
            "UPDATE audit_log SET actor = 'system:outro'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
            "UPDATE audit_chain SET row_hash = repeat('0', 64)",
            "DELETE FROM audit_checkpoints",
            "INSERT INTO audit_rewrite_permits VALUES (gen_random_uuid(), 'eu')",
            "DELETE FROM audit_log_default",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(statement)
        # The functions refuse what erasure and retention would not do.
        erase = "SELECT stratus_audit_erase($1, $2, $3::uuid[], $4::jsonb)"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only by their erasure"):
            await connection.execute(erase, bia.user_id, uuid.uuid4(), [], "[]")
        # A temporary table of the caller's cannot stand in for `users` (the functions put pg_temp last).
        await connection.execute("CREATE TEMP TABLE users (user_id uuid, email_index text)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only by their erasure"):
            await connection.execute(erase, bia.user_id, uuid.uuid4(), [], "[]")
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await connection.fetchval("SELECT stratus_audit_purge(999, now(), '{}')")
    finally:
        await connection.close()

    report = await PrivacyManager(app).erase_user(ana.user_id, "pedido da titular")
    bias_rows = await trail.query(user_id=bia.user_id)
    connection = await raw(app_url)
    try:
        erase = "SELECT stratus_audit_erase($1, $2, $3::uuid[], $4::jsonb)"
        # Ana is erased: only rows about her may be rewritten, to a new pseudonym, once.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="only rows about the person"):
            await connection.execute(erase, ana.user_id, uuid.uuid4(), [bias_rows.items[0].audit_id], "[]")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="new id"):
            await connection.execute(erase, ana.user_id, bia.user_id, [], "[]")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not rewritten again"):
            await connection.execute(erase, report.pseudonym, uuid.uuid4(), [], "[]")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not rewritten again"):
            await connection.execute(erase, uuid.uuid4(), report.pseudonym, [], "[]")
    finally:
        await connection.close()
    await trail.seal()
    verified = await trail.verify()
    assert verified.ok, verified.problems
    assert verified.redacted >= 1
    assert (await trail.query(user_id=bia.user_id)).items == bias_rows.items

    clock.advance(days=40)
    retaining = Database(app.settings.model_copy(update={"STRATUS_AUDIT_RETENTION_DAYS": 30}), clock=clock)
    try:
        sealed = sum(c.last_position - c.first_position + 1 for c in await trail.checkpoints())
        purged = await AuditManager(retaining).purge()
        assert purged.rows == sealed
        assert (await AuditManager(retaining).verify()).ok
    finally:
        await retaining.close()


async def test_a_purge_called_directly_is_audited_and_the_owner_sets_a_floor(
    owner_and_application: tuple[Database, Database, str],
) -> None:
    owner, app, app_url = owner_and_application
    trail = AuditManager(app)
    await create_user(UserManager(app))
    [checkpoint] = (await trail.seal()).checkpoints

    async with owner.engine.begin() as conn:
        await conn.execute(
            text(
                "ALTER FUNCTION stratus_audit_purge(bigint, timestamptz, jsonb) "
                "SET stratus.audit_minimum_retention = '30 days'"
            )
        )
    connection = await raw(app_url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="at least 30 days"):
            await connection.fetchval("SELECT stratus_audit_purge($1, now(), '{}')", checkpoint.checkpoint_id)
        async with owner.engine.begin() as conn:
            await conn.execute(
                text("ALTER FUNCTION stratus_audit_purge(bigint, timestamptz, jsonb) RESET ALL")
            )
        # With no floor the role may purge early; it cannot purge unrecorded.
        assert (
            await connection.fetchval("SELECT stratus_audit_purge($1, now(), '{}')", checkpoint.checkpoint_id)
            == 1
        )
    finally:
        await connection.close()
    [purge] = (await trail.query(action="purge")).items
    assert purge.actor.startswith("db:stratus_app_")
    assert purge.new_values == {"through_checkpoint": checkpoint.checkpoint_id, "rows": 1}
    await trail.seal()
    assert (await trail.verify()).ok


async def test_the_grant_refuses_what_would_leave_the_trail_rewritable(
    owner_and_application: tuple[Database, Database, str],
) -> None:
    owner, _app, _url = owner_and_application
    with pytest.raises(ValidationError, match="superuser"):
        await owner.grant_application_role("postgres")
    with pytest.raises(ValidationError, match="does not exist"):
        await owner.grant_application_role("stratus_nobody_here")
    with pytest.raises(ValidationError, match="role name"):
        await owner.grant_application_role("app; DROP TABLE users")
    with pytest.raises(ValidationError, match="role name"):
        await owner.grant_application_role(42)  # type: ignore[arg-type]


async def test_the_embedded_database_has_no_roles_to_grant(sqlite_db: Database) -> None:
    with pytest.raises(ConfigurationError, match="SQLite"):
        await sqlite_db.grant_application_role("app")
