"""PostgreSQL: writes made outside the library (psql, another service) leave an audit row too — the database login
as actor, the changed columns only, encrypted columns as ciphertext — and the library's own writes are not audited
twice."""

from __future__ import annotations

import asyncpg
from sqlalchemy import select, text

from stratus_db import AuditManager, Database, UserManager
from stratus_db.kit.models import table_of
from stratus_db.models import AuditRow
from stratus_db.schema import AUDIT_TABLES, DERIVED_TABLES, MANAGED_TABLES
from tests.fixtures.factories import count_rows, create_user


async def test_postgres_psql_changes_are_audited_with_the_login_as_actor(
    postgresql_only: Database,
) -> None:
    db = postgresql_only
    users, audit = UserManager(db), AuditManager(db)
    user = await create_user(users)
    assert await count_rows(db, "audit_log") == 1, "the library's write, audited once"

    url = db.settings.database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    outside = await asyncpg.connect(url, server_settings={"application_name": "psql"})
    try:
        login = await outside.fetchval("SELECT session_user")
        await outside.execute("UPDATE users SET role = 'instructor' WHERE user_id = $1", user.user_id)
        await outside.execute(
            "UPDATE users SET role = 'instructor' WHERE user_id = $1", user.user_id
        )  # no change
        await outside.execute("DELETE FROM users WHERE user_id = $1", user.user_id)
    finally:
        await outside.close()

    trail = (await audit.query(record_id=user.user_id)).items
    assert [(e.action, e.table_name, e.actor) for e in trail] == [
        ("delete", "users", f"db:{login}"),
        ("update", "users", f"db:{login}"),
        ("create", "users", "system:system"),
    ]
    changed = trail[1]
    assert (changed.old_values, changed.new_values, changed.user_agent) == (
        {"role": "pilot"},
        {"role": "instructor"},
        "psql",
    )
    assert trail[0].old_values["user_id"] == str(user.user_id)
    assert trail[0].old_values["name"] == user.name, "this process still holds the key: the trail reads"
    async with db.engine.connect() as conn:
        stored = await conn.scalar(
            select(table_of(AuditRow).c.old_values).where(table_of(AuditRow).c.audit_id == trail[0].audit_id)
        )
    assert stored is not None
    assert stored["name"].startswith("v1:u:"), "stored as the row held it: ciphertext"
    assert user.name not in str(stored)
    assert not {"data_key", "email_index", "canac_index"} & stored.keys(), (
        "no copy of the key outlives the row"
    )


async def test_postgres_every_table_of_data_has_the_outside_write_trigger(postgresql_only: Database) -> None:
    """A table added later without the trigger would let writes made outside the library go unaudited: every table
    the models define, but the audit trail's own and the metrics' counts (schema.DERIVED_TABLES), carries it."""
    async with postgresql_only.engine.connect() as conn:
        audited = set(
            (
                await conn.execute(
                    text(
                        "SELECT event_object_table FROM information_schema.triggers "
                        "WHERE trigger_name = 'audit_outside_write'"
                    )
                )
            ).scalars()
        )
    assert audited == MANAGED_TABLES - AUDIT_TABLES - DERIVED_TABLES
