"""memory search: search_text, plus PostgreSQL full text (portuguese + unaccent, trigrams) or SQLite FTS5

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:00:00

Written by hand: the full-text structures differ by dialect, so they are not in the models (schema.include_name and
include_object keep them out of the drift comparison).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_UPGRADE = [
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    # Portuguese stemming after accent folding: "meteorológica" and "meteorologia" meet at one lexeme.
    "CREATE TEXT SEARCH CONFIGURATION stratus_portuguese (COPY = pg_catalog.portuguese)",
    "ALTER TEXT SEARCH CONFIGURATION stratus_portuguese "
    "ALTER MAPPING FOR hword, hword_part, word WITH unaccent, portuguese_stem",
    # Stored, so a search reads each candidate's vector instead of parsing its text again.
    "ALTER TABLE memory_entries ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('stratus_portuguese'::regconfig, search_text)) STORED",
]
POSTGRES_DOWNGRADE = [
    "ALTER TABLE memory_entries DROP COLUMN search_vector",
    "DROP TEXT SEARCH CONFIGURATION stratus_portuguese",
]

# External-content FTS5 indexes over memory_entries.search_text, kept in step by triggers. Word index: accents removed,
# matched by stem prefix. Trigram index: typos and codes. They follow memory_entries' implicit rowid: a later revision
# that rebuilds memory_entries (a batch migration) must re-create the triggers and run both 'rebuild' commands.
SQLITE_UPGRADE = [
    "CREATE VIRTUAL TABLE memory_entries_fts USING fts5(search_text, content='memory_entries', "
    "content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')",
    "CREATE VIRTUAL TABLE memory_entries_fts_trigram USING fts5(search_text, content='memory_entries', "
    "content_rowid='rowid', tokenize='trigram')",
    """CREATE TRIGGER memory_entries_fts_insert AFTER INSERT ON memory_entries BEGIN
        INSERT INTO memory_entries_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
        INSERT INTO memory_entries_fts_trigram(rowid, search_text) VALUES (new.rowid, new.search_text);
    END""",
    """CREATE TRIGGER memory_entries_fts_delete AFTER DELETE ON memory_entries BEGIN
        INSERT INTO memory_entries_fts(memory_entries_fts, rowid, search_text)
            VALUES ('delete', old.rowid, old.search_text);
        INSERT INTO memory_entries_fts_trigram(memory_entries_fts_trigram, rowid, search_text)
            VALUES ('delete', old.rowid, old.search_text);
    END""",
    """CREATE TRIGGER memory_entries_fts_update AFTER UPDATE OF search_text ON memory_entries BEGIN
        INSERT INTO memory_entries_fts(memory_entries_fts, rowid, search_text)
            VALUES ('delete', old.rowid, old.search_text);
        INSERT INTO memory_entries_fts_trigram(memory_entries_fts_trigram, rowid, search_text)
            VALUES ('delete', old.rowid, old.search_text);
        INSERT INTO memory_entries_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
        INSERT INTO memory_entries_fts_trigram(rowid, search_text) VALUES (new.rowid, new.search_text);
    END""",
    "INSERT INTO memory_entries_fts(memory_entries_fts) VALUES ('rebuild')",
    "INSERT INTO memory_entries_fts_trigram(memory_entries_fts_trigram) VALUES ('rebuild')",
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER memory_entries_fts_update",
    "DROP TRIGGER memory_entries_fts_delete",
    "DROP TRIGGER memory_entries_fts_insert",
    "DROP TABLE memory_entries_fts_trigram",
    "DROP TABLE memory_entries_fts",
]


def _backfill_search_text() -> None:
    """Memories stored before this revision get their search text, or search could never find them."""
    # The one import of application code in a revision: the text must be folded exactly as store_memory folds it.
    from stratus_db.kit.text import search_text

    if context.is_offline_mode():
        # Offline SQL (`stratus-db migrate --sql`) cannot run Python over the rows: from an empty database there are
        # none to fold; from revision 0001 there may be, and only an online migration can fold them.
        if context.get_starting_revision_argument() is not None:
            raise RuntimeError(
                "the upgrade from 0001 folds stored memories' text in Python: run `stratus-db migrate` against the "
                "database; offline SQL (--sql) is available from an empty database or from revision 0002 on"
            )
        return
    bind = op.get_bind()
    memories = sa.table(
        "memory_entries",
        sa.column("memory_id", sa.Uuid()),
        sa.column("key", sa.String()),
        sa.column("value", sa.JSON()),
    )
    rows = bind.execute(sa.select(memories.c.memory_id, memories.c.key, memories.c.value)).all()
    if rows:
        bind.execute(
            sa.text("UPDATE memory_entries SET search_text = :text WHERE memory_id = :memory_id").bindparams(
                sa.bindparam("memory_id", type_=sa.Uuid())
            ),
            [{"memory_id": row.memory_id, "text": search_text(row.key, row.value)} for row in rows],
        )


def upgrade() -> None:
    op.add_column("memory_entries", sa.Column("search_text", sa.Text(), server_default="", nullable=False))
    _backfill_search_text()
    statements = POSTGRES_UPGRADE if op.get_bind().dialect.name == "postgresql" else SQLITE_UPGRADE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = POSTGRES_DOWNGRADE if op.get_bind().dialect.name == "postgresql" else SQLITE_DOWNGRADE
    for statement in statements:
        op.execute(statement)
    with op.batch_alter_table("memory_entries") as batch:
        batch.drop_column("search_text")
