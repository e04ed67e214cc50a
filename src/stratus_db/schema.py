"""The schema's revision: upgrade to head, and compare a database with what this code expects."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from stratus_db.models import Base

SCRIPT_LOCATION = "stratus_db:migrations"


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


def schema_drift(connection: Connection) -> list[object]:
    """Differences between the models and the migrated database; empty when they agree."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))
