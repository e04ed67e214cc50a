"""conversation history: summaries, packed message bodies, per-user message index and message full text

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 14:30:00

The full-text structures differ by dialect, so they are written by hand and kept out of the models (schema.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_UPGRADE = [
    "CREATE EXTENSION IF NOT EXISTS btree_gin",
    # Not a generated column: packing an archived conversation empties `content`, and its messages must stay findable.
    "ALTER TABLE messages ADD COLUMN search_vector tsvector",
    """CREATE FUNCTION messages_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.search_vector := to_tsvector('stratus_portuguese'::regconfig, NEW.content);
        RETURN NEW;
    END
    $$""",
    "CREATE TRIGGER messages_search_vector BEFORE INSERT OR UPDATE OF content ON messages "
    "FOR EACH ROW WHEN (NEW.content IS NOT NULL) EXECUTE FUNCTION messages_search_vector()",
    "UPDATE messages SET search_vector = to_tsvector('stratus_portuguese'::regconfig, content) "
    "WHERE content IS NOT NULL",
    # One user's matching messages straight from the index, however many other users say the same words.
    "CREATE INDEX ix_messages_search ON messages USING gin (user_id, search_vector)",
]
POSTGRES_DOWNGRADE = [
    "DROP INDEX ix_messages_search",
    "DROP TRIGGER messages_search_vector ON messages",
    "DROP FUNCTION messages_search_vector()",
    "ALTER TABLE messages DROP COLUMN search_vector",
]

# An FTS5 table with its own copy of the text (not external content): a packed message's `content` is empty, and an
# external-content index could then no longer delete its entry. It follows messages' implicit rowid: a later revision
# that rebuilds messages (a batch migration) must refill it.
SQLITE_UPGRADE = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5(content, tokenize='unicode61 remove_diacritics 2')",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.content IS NOT NULL BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.rowid, new.content);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        DELETE FROM messages_fts WHERE rowid = old.rowid;
    END""",
    "INSERT INTO messages_fts(rowid, content) SELECT rowid, content FROM messages WHERE content IS NOT NULL",
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER messages_fts_delete",
    "DROP TRIGGER messages_fts_insert",
    "DROP TABLE messages_fts",
]


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("summarized_through_seq", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("summarized_tokens", sa.BigInteger(), server_default="0", nullable=False))
        batch.alter_column("total_tokens", existing_type=sa.Integer(), type_=sa.BigInteger())
        batch.create_check_constraint(
            "summarized_range",
            "summarized_through_seq BETWEEN 0 AND message_count AND summarized_tokens BETWEEN 0 AND total_tokens",
        )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("packed_content", sa.LargeBinary(), nullable=True))
        batch.alter_column("content", existing_type=sa.Text(), nullable=True)
        batch.create_check_constraint("one_body", "(content IS NULL) <> (packed_content IS NULL)")
    op.create_index(op.f("ix_messages_user_id_created_at"), "messages", ["user_id", "created_at"])
    statements = POSTGRES_UPGRADE if op.get_bind().dialect.name == "postgresql" else SQLITE_UPGRADE
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    statements = POSTGRES_DOWNGRADE if op.get_bind().dialect.name == "postgresql" else SQLITE_DOWNGRADE
    for statement in statements:
        op.execute(statement)
    op.drop_index(op.f("ix_messages_user_id_created_at"), table_name="messages")
    # Packed bodies cannot be unpacked here (no application code in a downgrade): refuse rather than lose them.
    packed = op.get_bind().execute(sa.text("SELECT count(*) FROM messages WHERE packed_content IS NOT NULL"))
    if packed.scalar_one():
        raise RuntimeError("unpack the archived conversations before downgrading below revision 0003")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(op.f("ck_messages_one_body"), type_="check")
        batch.alter_column("content", existing_type=sa.Text(), nullable=False)
        batch.drop_column("packed_content")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_constraint(op.f("ck_conversations_summarized_range"), type_="check")
        batch.drop_column("summarized_tokens")
        batch.alter_column("total_tokens", existing_type=sa.BigInteger(), type_=sa.Integer())
        batch.drop_column("summarized_through_seq")
