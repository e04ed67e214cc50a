"""The schema's revisions as an operator sees them (`stratus-db db …`, `stratus-db migrate --sql`), through Alembic's
own commands and script directory: history, downgrade targets, offline SQL.

The functions taking a `Connection` run inside the caller's transaction (see `StratusPostgreSQLIntegration`).
"""

from __future__ import annotations

import io

from alembic import command
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from stratus_db.config import Settings
from stratus_db.errors import ValidationError
from stratus_db.kit.validation import shown
from stratus_db.schema import alembic_config

BASE = "base"
"""Alembic's name for "before the first revision": downgrading there drops every table of the package."""


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def revision_ids() -> list[str]:
    """Every revision the package ships, newest first."""
    return [script.revision for script in _script().walk_revisions()]


def resolve(revision: object, name: str) -> str | None:
    """The full id of a revision the package ships (given in full or by a unique prefix, as Alembic accepts it), or
    None for `base`.

    Raises:
        ValidationError: not text, or no such revision (the message lists the accepted ones).
    """
    accepted = f"one of {', '.join(revision_ids())} or {BASE}"
    if not isinstance(revision, str) or not revision.strip():
        raise ValidationError(f"{name} must be a revision id ({accepted}), got {shown(revision)}")
    if revision.strip() == BASE:
        return None
    try:
        found = _script().get_revision(revision.strip())
    except CommandError:
        found = None
    if found is None:
        raise ValidationError(f"{name} must be a revision id ({accepted}), got {shown(revision)}")
    return found.revision


def downgrade_target(revision: object, current: str | None) -> str | None:
    """The revision a downgrade from `current` to `revision` ends at (None: base).

    Raises:
        ValidationError: no such revision, nothing to downgrade (an empty database), or `revision` is not older than
            `current` (a downgrade only goes back; `migrate` goes forward).
    """
    target = resolve(revision, "revision")
    if current is None:
        raise ValidationError(
            "revision: the database has no schema revision (it is empty): there is nothing to downgrade"
        )
    if target is not None and target not in [
        script.revision for script in _script().walk_revisions(base=BASE, head=current)
    ]:
        raise ValidationError(
            f"revision {target} is not older than the database's revision {current}: a downgrade only goes back "
            "(`stratus-db migrate` upgrades)"
        )
    return target


def downgrade_to(connection: Connection, target: str | None, settings: Settings | None = None) -> None:
    """Run the downgrade migrations from the database's revision to `target` (None: base) on `connection`;
    `settings` give the keys a migration that decrypts rows needs (load_settings() without them)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    config.attributes["settings"] = settings
    command.downgrade(config, target or BASE)


def history(connection: Connection) -> list[str]:
    """Alembic's history, newest first, one line a revision, `(head)` and `(current)` marked as `alembic history
    --indicate-current` marks them."""
    config = alembic_config()
    config.attributes["connection"] = connection
    config.stdout = io.StringIO()
    command.history(config, indicate_current=True)
    return config.stdout.getvalue().splitlines()


def upgrade_sql(url: URL, from_revision: str | None = None) -> str:
    """The SQL that upgrades a database of `url`'s dialect to head (Alembic's offline mode), from `from_revision`
    (default: an empty database). Nothing connects to the database.

    Raises:
        ValidationError: `from_revision` is not a revision the package ships, or the range cannot be written as SQL
            (a migration that must run Python over the rows, or SQLite's table rebuilds, which need the live table).
    """
    start = resolve(from_revision, "from_revision") if from_revision is not None else None
    config = alembic_config()
    config.attributes["url"] = url
    buffer = io.StringIO()
    config.output_buffer = buffer
    try:
        command.upgrade(config, f"{start}:head" if start is not None else "head", sql=True)
    except (CommandError, RuntimeError) as exc:
        raise ValidationError(f"the upgrade cannot be written as SQL: {exc}") from None
    return buffer.getvalue()
