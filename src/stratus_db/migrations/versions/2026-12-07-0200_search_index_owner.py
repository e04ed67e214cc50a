"""search index owner: SQLite's FTS5 tables hold each row's user_id, so a search matches the owner's rows only

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 02:00:00

SQLite only (PostgreSQL finds one user's matches through its indexes already), written by hand and kept out of the
models (schema.py). memory_entries_fts, memory_entries_fts_trigram and messages_fts get a `user_id` column, and a
search asks for `user_id : "<owner's hex id>" AND <column> : (<words>)` (kit/text.py fts5_owned_query). Before, the
match read every user's matching rows and the owner filter came after it, so a search cost as much as all users'
matches together: with 300 users holding 90,000 memories and 180,000 messages, searching one user's took about 160 ms
(memories) and 30 ms (messages), and about 11 ms and 6 ms with the owner in the match (one user alone: 10 and 3 ms).
SQLite stores a UUID as 32 hex digits: one token for the word tokenizer; for the trigram tokenizer a phrase of 30
trigrams, still far narrower than a query's trigrams across every user. Rebuilding took 12 s on that file.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MEMORY_TABLES = {
    "memory_entries_fts": "unicode61 remove_diacritics 2",
    "memory_entries_fts_trigram": "trigram",
}


def _memory_index(columns: Sequence[str]) -> list[str]:
    """memory_entries' external-content FTS5 tables over `columns` (read from memory_entries by name), their
    triggers, and the rebuild that fills them from memory_entries."""
    listed = ", ".join(columns)
    new = ", ".join(f"new.{column}" for column in columns)
    old = ", ".join(f"old.{column}" for column in columns)
    statements = [
        f"CREATE VIRTUAL TABLE {table} USING fts5({listed}, content='memory_entries', content_rowid='rowid', "
        f"tokenize='{tokenizer}')"
        for table, tokenizer in _MEMORY_TABLES.items()
    ]
    insert = "".join(
        f"INSERT INTO {table}(rowid, {listed}) VALUES (new.rowid, {new});" for table in _MEMORY_TABLES
    )
    # An external-content index forgets a row only when told the values it indexed.
    delete = "".join(
        f"INSERT INTO {table}({table}, rowid, {listed}) VALUES ('delete', old.rowid, {old});"
        for table in _MEMORY_TABLES
    )
    statements += [
        f"CREATE TRIGGER memory_entries_fts_insert AFTER INSERT ON memory_entries BEGIN {insert} END",
        f"CREATE TRIGGER memory_entries_fts_delete AFTER DELETE ON memory_entries BEGIN {delete} END",
        f"CREATE TRIGGER memory_entries_fts_update AFTER UPDATE OF {listed} ON memory_entries "
        f"BEGIN {delete}{insert} END",
    ]
    statements += [f"INSERT INTO {table}({table}) VALUES ('rebuild')" for table in _MEMORY_TABLES]
    return statements


_DROP_MEMORY_INDEX = [
    "DROP TRIGGER memory_entries_fts_update",
    "DROP TRIGGER memory_entries_fts_delete",
    "DROP TRIGGER memory_entries_fts_insert",
    *(f"DROP TABLE {table}" for table in _MEMORY_TABLES),
]


def _message_index(columns: Sequence[str], filled_from: str) -> list[str]:
    """messages_fts over `columns`, filled from the index it replaces, and its triggers. The index holds its own copy
    of the text (revision 0003): an archived message's body is packed, so `filled_from` is the only place where its
    words still are."""
    listed = ", ".join(columns)
    new = ", ".join(f"new.{column}" for column in columns)
    selected = ", ".join("f.content" if column == "content" else f"m.{column}" for column in columns)
    return [
        f"ALTER TABLE messages_fts RENAME TO {filled_from}",
        f"CREATE VIRTUAL TABLE messages_fts USING fts5({listed}, tokenize='unicode61 remove_diacritics 2')",
        f"INSERT INTO messages_fts(rowid, {listed}) SELECT f.rowid, {selected} "
        f"FROM {filled_from} AS f JOIN messages AS m ON m.rowid = f.rowid",
        f"DROP TABLE {filled_from}",
        f"""CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.content IS NOT NULL BEGIN
            INSERT INTO messages_fts(rowid, {listed}) VALUES (new.rowid, {new});
        END""",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            DELETE FROM messages_fts WHERE rowid = old.rowid;
        END""",
    ]


_DROP_MESSAGE_TRIGGERS = ["DROP TRIGGER messages_fts_delete", "DROP TRIGGER messages_fts_insert"]

SQLITE_UPGRADE = [
    *_DROP_MEMORY_INDEX,
    *_memory_index(["search_text", "user_id"]),
    *_DROP_MESSAGE_TRIGGERS,
    *_message_index(["content", "user_id"], filled_from="messages_fts_0004"),
]
SQLITE_DOWNGRADE = [
    *_DROP_MEMORY_INDEX,
    *_memory_index(["search_text"]),
    *_DROP_MESSAGE_TRIGGERS,
    *_message_index(["content"], filled_from="messages_fts_0005"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DOWNGRADE:
            op.execute(statement)
