"""The schema's revision: upgrade to head, and compare a database with what this code expects."""

from __future__ import annotations

import re
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, inspect, text

from stratus_db.config import Settings
from stratus_db.errors import DatabaseError, ValidationError
from stratus_db.models import Base

SCRIPT_LOCATION = "stratus_db:migrations"

MANAGED_TABLES = frozenset(Base.metadata.tables)
"""The tables this project owns, from the models: the only ones migrations and the drift check look at.

The database may be shared with other applications (LangGraph's `checkpoints` and `store`, say): an allow-list keeps
their tables, and with them their indexes, constraints and sequences, out of every comparison, so autogenerate never
writes a `drop_table` for them and the drift check never reports them. Our own hand-written SQLite FTS5 tables
(`memory_entries_fts*`, `messages_fts*`) are left out the same way; Alembic skips its own `alembic_version`."""
SEARCH_COLUMNS = frozenset({"search_vector"})
"""PostgreSQL's tsvector columns, on managed tables: backend-specific, so not in the models."""
SEARCH_INDEXES = frozenset({"ix_messages_search"})
"""PostgreSQL's full-text and trigram indexes over those columns and over memory_entries.search_text."""


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic's filter on reflected names: only MANAGED_TABLES are reflected and compared at all."""
    if type_ == "table":
        return name in MANAGED_TABLES
    return True


def include_object(obj: object, name: str | None, type_: str, _reflected: bool, _compare_to: object) -> bool:
    """Alembic's filter on objects: the hand-written search columns and indexes on managed tables are left out, and
    so is anything on a table that is not managed (include_name already keeps those from being reflected)."""
    if type_ == "table":
        return name in MANAGED_TABLES
    table = getattr(obj, "table", None)
    if isinstance(table, Table) and table.name not in MANAGED_TABLES:
        return False
    return not (
        (type_ == "column" and name in SEARCH_COLUMNS) or (type_ == "index" and name in SEARCH_INDEXES)
    )


COMPARISON_OPTIONS: dict[str, Any] = {
    "compare_type": True,
    "include_name": include_name,
    "include_object": include_object,
}
"""How the models are compared with a database, by autogenerate (migrations/env.py) and by schema_drift alike."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships no migration"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(connection: Connection, settings: Settings | None = None) -> None:
    """Run every missing migration on `connection` (inside the caller's transaction); `settings` give the keys a
    migration that encrypts existing rows needs (load_settings() without them)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["settings"] = settings
    command.upgrade(config, "head")


def check_references(connection: Connection) -> None:
    """Fail (and so roll the migration back) if a row refers to a row that is not there (SQLite; see backends.py)."""
    if connection.dialect.name != "sqlite":
        return  # PostgreSQL checks every foreign key as the migration runs
    # Table by table, ours only: another application's rows (one that never turns foreign keys on, say) are not ours
    # to judge, and its tables may be large. Only those that exist: a downgrade may have dropped some, or all.
    existing = set(inspect(connection).get_table_names())
    tables = [
        table
        for table in sorted(MANAGED_TABLES & existing)
        if connection.exec_driver_sql(f'PRAGMA foreign_key_check("{table}")').first() is not None
    ]
    if tables:
        raise DatabaseError(f"the migration left rows whose references are broken in: {', '.join(tables)}")


def schema_drift(connection: Connection) -> list[object]:
    """Differences between the models and the migrated database, over MANAGED_TABLES only; empty when they agree."""
    context = MigrationContext.configure(connection, opts=COMPARISON_OPTIONS)
    return list(compare_metadata(context, Base.metadata))


AUDIT_TABLES = frozenset(
    {"audit_log", "audit_chain", "audit_checkpoints", "audit_redactions", "audit_rewrite_permits"}
)
"""The audit trail's tables: the application's role appends to some and rewrites none (`grant_application_role`)."""
DERIVED_TABLES = frozenset({"activity_daily", "response_time_daily", "rollup_state", "service_samples"})
"""The metrics' tables (docs/metrics.md): counts derived from the data, or kept by the processes. Not audited, as
writing them changes nothing of a person's; so without revision 0011's outside-write trigger."""
APPENDED_BY_THE_APPLICATION = ("audit_log", "audit_chain", "audit_checkpoints")
"""Audit tables the application's role inserts into: its audit rows, and the sealer's seals and checkpoints."""
AUDIT_FUNCTIONS = (
    "stratus_audit_add_partition(timestamptz)",
    "stratus_audit_erase(uuid, uuid, uuid[], jsonb)",
    "stratus_audit_purge(bigint, timestamptz, jsonb)",
)
"""Revision 0013's SECURITY DEFINER functions: the only ways the application's role changes what is in the trail."""
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def grant_application_role(connection: Connection, role: str) -> None:
    """PostgreSQL: let `role` (an existing role that owns nothing here and is no superuser) do everything the
    library does, and no more on the audit trail: read, insert, update and delete the data tables; read the audit
    tables and append to audit_log and to the seals; never UPDATE, DELETE or TRUNCATE them. Erasure, retention and
    the month partitions go through revision 0013's functions, which run as their owner (the migrations' role).
    Run as the owner of the tables, after `migrate`; idempotent."""
    if not ROLE_NAME.fullmatch(role):
        raise ValidationError(
            f"role must be a PostgreSQL role name (lower-case letters, digits and _, at most 63), got {role!r}"
        )
    found = connection.execute(
        text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    if found is None:
        raise ValidationError(f"role {role!r} does not exist: create it first (CREATE ROLE {role} LOGIN)")
    if found.rolsuper or found.rolbypassrls:
        kind = "a superuser" if found.rolsuper else "allowed to bypass row security"
        raise ValidationError(f"role {role!r} is {kind}: nothing can be withheld from it; use a plain role")
    owner = connection.execute(text("SELECT tableowner FROM pg_tables WHERE tablename = 'users'")).scalar()
    if connection.execute(
        text("SELECT pg_has_role(:role, :owner, 'USAGE')"), {"role": role, "owner": owner}
    ).scalar():
        raise ValidationError(
            f"role {role!r} owns the tables or acts as their owner ({owner}), who may do anything to them: "
            "grant to another role"
        )
    quote = connection.dialect.identifier_preparer.quote
    grantee, schema_name = quote(role), quote(str(connection.dialect.default_schema_name))
    data_tables = ", ".join(sorted(MANAGED_TABLES - AUDIT_TABLES))
    statements = [
        f"GRANT USAGE ON SCHEMA {schema_name} TO {grantee}",
        f"GRANT SELECT ON {', '.join(sorted(MANAGED_TABLES | {'alembic_version'}))} TO {grantee}",
        f"GRANT INSERT, UPDATE, DELETE ON {data_tables} TO {grantee}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {', '.join(sorted(AUDIT_TABLES))} FROM {grantee}",
        f"GRANT INSERT ON {', '.join(APPENDED_BY_THE_APPLICATION)} TO {grantee}",
        f"GRANT EXECUTE ON FUNCTION {', '.join(AUDIT_FUNCTIONS)} TO {grantee}",
    ]
    for statement in statements:
        connection.execute(text(statement))
    # A privilege held another way (granted to PUBLIC, or to a role it belongs to) is not revoked above: refuse.
    rewrites = [
        table
        for table in sorted(AUDIT_TABLES | {"audit_erasures"})
        if connection.execute(
            text("SELECT has_table_privilege(:role, :table, 'UPDATE, DELETE, TRUNCATE')"),
            {"role": role, "table": table},
        ).scalar()
    ]
    if rewrites:
        raise ValidationError(
            f"role {role!r} may still update, delete or truncate {', '.join(rewrites)} through PUBLIC or another "
            "role it belongs to: revoke that first"
        )
