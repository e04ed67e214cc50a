"""memory search vector kept by a trigger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 15:00:00

PostgreSQL only (SQLite's FTS5 tables from 0002 already index search_text), written by hand and kept out of the
models (schema.py):

- `search_vector` becomes a plain column kept by triggers that run only when `search_text` changes: as a stored
  generated column it was computed again (`to_tsvector` with unaccent and the Portuguese stemmer) by every update of
  the row, including every access count of get_memory and every cache flush.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_UPGRADE = [
    # Keeps the values computed so far (no rewrite, no backfill needed); from now on the triggers below maintain it.
    "ALTER TABLE memory_entries ALTER COLUMN search_vector DROP EXPRESSION",
    """CREATE FUNCTION memory_entries_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.search_vector := to_tsvector('stratus_portuguese'::regconfig, NEW.search_text);
        RETURN NEW;
    END
    $$""",
    "CREATE TRIGGER memory_entries_search_vector_insert BEFORE INSERT ON memory_entries "
    "FOR EACH ROW EXECUTE FUNCTION memory_entries_search_vector()",
    # Updates name search_text whenever they store a value; the vector is only recomputed when the text changed.
    "CREATE TRIGGER memory_entries_search_vector_update BEFORE UPDATE OF search_text ON memory_entries "
    "FOR EACH ROW WHEN (OLD.search_text IS DISTINCT FROM NEW.search_text) "
    "EXECUTE FUNCTION memory_entries_search_vector()",
]
# No trigram index on search_text: a GIN (user_id, search_text gin_trgm_ops) index made search_memories 1.45× faster
# at concurrency 16 but store_memory 3.8× slower (every changed value writes ~100 trigrams into it; bench/memory.py,
# docs/benchmarks.md). The typo stage compares one user's rows, at most STRATUS_MEMORY_MAX_PER_USER of them.
POSTGRES_DOWNGRADE = [
    "DROP TRIGGER memory_entries_search_vector_update ON memory_entries",
    "DROP TRIGGER memory_entries_search_vector_insert ON memory_entries",
    "DROP FUNCTION memory_entries_search_vector()",
    # A generated column cannot be made from a plain one in place: add it again, computed for every row.
    "ALTER TABLE memory_entries DROP COLUMN search_vector",
    "ALTER TABLE memory_entries ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('stratus_portuguese'::regconfig, search_text)) STORED",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_DOWNGRADE:
            op.execute(statement)
