"""The schema's revision: upgrade to head, and compare a database with what this code expects."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, inspect

from stratus_db.config import Settings
from stratus_db.errors import DatabaseError
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
