"""The schema's revision: upgrade to head, and compare a database with what this code expects."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from stratus_db.errors import DatabaseError
from stratus_db.models import Base

SCRIPT_LOCATION = "stratus_db:migrations"

SEARCH_TABLE_PREFIXES = ("memory_entries_fts", "messages_fts")
"""SQLite's FTS5 tables for memory and message search (and their shadow tables) start with these."""
SEARCH_COLUMNS = frozenset({"search_vector"})
"""PostgreSQL's tsvector columns: backend-specific, so not in the models."""
SEARCH_INDEXES = frozenset({"ix_messages_search"})
"""PostgreSQL's full-text and trigram indexes over those columns and over memory_entries.search_text."""


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Leave out of model comparison what the search backends add on one dialect only."""
    return not (type_ == "table" and name is not None and name.startswith(SEARCH_TABLE_PREFIXES))


def include_object(obj: object, name: str | None, type_: str, _reflected: bool, _compare_to: object) -> bool:
    return not (
        (type_ == "column" and name in SEARCH_COLUMNS) or (type_ == "index" and name in SEARCH_INDEXES)
    )


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


def upgrade_to_head(connection: Connection) -> None:
    """Run every missing migration on `connection` (inside the caller's transaction)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def check_references(connection: Connection) -> None:
    """Fail (and so roll the migration back) if a row refers to a row that is not there (SQLite; see backends.py)."""
    if connection.dialect.name != "sqlite":
        return  # PostgreSQL checks every foreign key as the migration runs
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        tables = sorted({row[0] for row in broken})
        raise DatabaseError(f"the migration left rows whose references are broken in: {', '.join(tables)}")


def schema_drift(connection: Connection) -> list[object]:
    """Differences between the models and the migrated database; empty when they agree."""
    context = MigrationContext.configure(
        connection,
        opts={"compare_type": True, "include_name": include_name, "include_object": include_object},
    )
    return list(compare_metadata(context, Base.metadata))
