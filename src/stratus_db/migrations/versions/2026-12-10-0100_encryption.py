"""encryption of personal data: per-user data keys, encrypted columns, blind indexes, sensitive memories

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 01:00:00

Both backends (docs/security.md). `users` gains `data_key` (the user's data key, wrapped by the keyring),
`email_index` and `canac_index` (blind indexes: HMAC-SHA-256 under STRATUS_BLIND_INDEX_KEY), which take over the
uniqueness of `email` and `canac`; `name`, `email`, `birth_date` and `canac` become TEXT tokens. In
`user_credentials`, `number` and `issued_at` become TEXT tokens (`restrictions` already is TEXT), and the CHECK that
the expiry is not before the issue goes (UserManager checks it: the issue date is encrypted). `memory_entries`
gains `sensitive` (false for every existing memory).

Existing rows are encrypted by the upgrade, in batches of 1,000, with the keys of the settings the migration runs
with (the database handle's, or load_settings() for the `alembic` command line): each user gets a data key, their
fields and their credentials' are encrypted under it, and the personal values in the audit rows about users and
credentials too (those of users no longer present are replaced by `[shredded]`: nobody can read them any more).
`migrate --sql` writes the schema change only: its script fails on a database that already holds users (at making
`email_index` NOT NULL), which must be migrated online.

The downgrade decrypts everything back (with the same keys) and restores the columns, their types and constraints;
sensitive memories become ordinary ones, their values in clear (searchable again once rewritten).
"""

import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

from stratus_db.errors import DecryptionError
from stratus_db.security.crypto import Cell, FieldCipher, is_token

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000
SHREDDED = "[shredded]"
TOMBSTONE_DOMAIN = "@erased.invalid"
_USER_FIELDS = ("name", "email", "birth_date", "canac")
_CREDENTIAL_FIELDS = ("number", "issued_at", "restrictions")
_AUDIT_FIELDS = {"users": _USER_FIELDS, "user_credentials": _CREDENTIAL_FIELDS}
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

_users = sa.table(
    "users",
    sa.column("user_id", sa.Uuid()),
    sa.column("name", sa.Text()),
    sa.column("email", sa.Text()),
    sa.column("birth_date", sa.Text()),
    sa.column("canac", sa.Text()),
    sa.column("email_index", sa.String()),
    sa.column("canac_index", sa.String()),
    sa.column("data_key", sa.Text()),
)
_credentials = sa.table(
    "user_credentials",
    sa.column("credential_id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("number", sa.Text()),
    sa.column("issued_at", sa.Text()),
    sa.column("restrictions", sa.Text()),
)
_audit = sa.table(
    "audit_log",
    sa.column("audit_id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("record_id", sa.Uuid()),
    sa.column("table_name", sa.String()),
    sa.column("old_values", _JSON),
    sa.column("new_values", _JSON),
)
_memories = sa.table(
    "memory_entries",
    sa.column("memory_id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("value", _JSON),
    sa.column("sensitive", sa.Boolean()),
)


def _keys() -> Any:
    """The Encryption of the settings this migration runs with (imported here: only a database with rows needs
    keys, and `migrate --sql` none)."""
    from stratus_db.config import load_settings
    from stratus_db.security.keystore import load_encryption

    settings = context.config.attributes.get("settings") or load_settings()
    return load_encryption(settings)


def _pages(conn: sa.Connection, statement: sa.Select[Any], key: sa.ColumnElement[Any]) -> Iterator[list[Any]]:
    """The rows of `statement` in pages of BATCH, in `key` order (keyset: each page starts after the last)."""
    after = None
    while True:
        page = statement.order_by(key).limit(BATCH)
        rows = list(conn.execute(page if after is None else page.where(key > after)))
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _has_users() -> bool:
    return op.get_bind().execute(sa.select(_users.c.user_id).limit(1)).first() is not None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _audit_values(
    conn: sa.Connection, change: Callable[[str, str, Any, uuid.UUID, Any], Any], cipher: FieldCipher
) -> None:
    """Rewrite the personal fields of the audit rows about users and credentials with `change(side, name, value,
    audit_id, data_key)` (data_key None when the user is gone)."""
    statement = (
        sa.select(
            _audit.c.audit_id,
            _audit.c.user_id,
            _audit.c.table_name,
            _audit.c.old_values,
            _audit.c.new_values,
            _users.c.data_key,
        )
        .select_from(_audit.outerjoin(_users, _users.c.user_id == _audit.c.user_id))
        .where(_audit.c.table_name.in_(list(_AUDIT_FIELDS)))
    )
    rewrite = (
        sa.update(_audit)
        .where(_audit.c.audit_id == sa.bindparam("b_id"))
        .values(old_values=sa.bindparam("b_old", type_=_JSON), new_values=sa.bindparam("b_new", type_=_JSON))
    )
    for rows in _pages(conn, statement, _audit.c.audit_id):
        updates = []
        for row in rows:
            key = None if row.data_key is None else cipher.unwrap_data_key(row.data_key, row.user_id)
            fields = _AUDIT_FIELDS[row.table_name]
            updates.append(
                {
                    "b_id": row.audit_id,
                    "b_old": _rewritten(row.old_values, fields, "old_values", row.audit_id, key, change),
                    "b_new": _rewritten(row.new_values, fields, "new_values", row.audit_id, key, change),
                }
            )
        conn.execute(rewrite, updates)


def _rewritten(
    values: Any,
    fields: tuple[str, ...],
    side: str,
    audit_id: uuid.UUID,
    key: Any,
    change: Callable[[str, str, Any, uuid.UUID, Any], Any],
) -> Any:
    if not isinstance(values, dict):
        return values
    return {
        name: change(side, name, value, audit_id, key) if name in fields and value is not None else value
        for name, value in values.items()
    }


def _refuse_cascading_rebuild() -> None:
    """SQLite rebuilds `users` (batch mode): DROP TABLE with foreign keys on would first delete every row that
    references a user (ON DELETE CASCADE). `stratus-db migrate`, db.migrate and the alembic command line run with
    them off; a connection that turned them on must not run this."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError(
            "revision 0009 rebuilds the users table, which SQLite must do with foreign keys off: run it with "
            "`stratus-db migrate` (or turn PRAGMA foreign_keys off before the migration's transaction)"
        )


def upgrade() -> None:
    if not context.is_offline_mode():
        _refuse_cascading_rebuild()
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_index", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("data_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("canac_index", sa.String(length=64), nullable=True))
        batch.drop_constraint(op.f("uq_users_email"), type_="unique")
        batch.drop_index(op.f("ix_users_canac"))
        batch.alter_column(
            "name", type_=sa.Text(), existing_type=sa.String(length=200), existing_nullable=False
        )
        batch.alter_column(
            "email", type_=sa.Text(), existing_type=sa.String(length=320), existing_nullable=False
        )
        batch.alter_column(
            "birth_date",
            type_=sa.Text(),
            existing_type=sa.Date(),
            postgresql_using="to_char(birth_date, 'YYYY-MM-DD')",
        )
        batch.alter_column("canac", type_=sa.Text(), existing_type=sa.String(length=6))
    with op.batch_alter_table("user_credentials") as batch:
        batch.drop_constraint(op.f("ck_user_credentials_expiry_not_before_issue"), type_="check")
        batch.alter_column("number", type_=sa.Text(), existing_type=sa.String(length=50))
        batch.alter_column(
            "issued_at",
            type_=sa.Text(),
            existing_type=sa.Date(),
            postgresql_using="to_char(issued_at, 'YYYY-MM-DD')",
        )
    op.add_column(
        "memory_entries", sa.Column("sensitive", sa.Boolean(), server_default=sa.false(), nullable=False)
    )

    if context.is_offline_mode():
        op.execute(
            "-- stratus_db 0009: existing users must be encrypted online (`stratus-db migrate`); this script "
            "assumes an empty users table"
        )
    elif _has_users():
        _encrypt_rows(op.get_bind())

    with op.batch_alter_table("users") as batch:
        batch.alter_column("email_index", existing_type=sa.String(length=80), nullable=False)
        batch.create_index(op.f("ix_users_email_index"), ["email_index"], unique=True)
        batch.create_index(op.f("ix_users_canac_index"), ["canac_index"], unique=True)


def _encrypt_rows(conn: sa.Connection) -> None:
    encryption = _keys()
    cipher: FieldCipher = encryption.fields
    blind = encryption.blind_index

    user_rows = sa.select(_users.c.user_id, *(_users.c[name] for name in _USER_FIELDS))
    write_user = (
        sa.update(_users)
        .where(_users.c.user_id == sa.bindparam("b_id"))
        .values(
            {
                name: sa.bindparam(f"b_{name}")
                for name in (*_USER_FIELDS, "email_index", "canac_index", "data_key")
            }
        )
    )
    for rows in _pages(conn, user_rows, _users.c.user_id):
        updates = []
        for row in rows:
            key, wrapped = cipher.new_data_key(row.user_id)
            email = row.email.lower()
            if email.endswith(TOMBSTONE_DOMAIN):
                # An erased user kept for a legal hold: placeholders, not personal data, stay as they are; the key
                # encrypts the credentials it may keep.
                updates.append(
                    {
                        "b_id": row.user_id,
                        "b_name": row.name,
                        "b_email": row.email,
                        "b_birth_date": None,
                        "b_canac": None,
                        "b_email_index": "erased:"
                        + email.removesuffix(TOMBSTONE_DOMAIN).removeprefix("erased-"),
                        "b_canac_index": None,
                        "b_data_key": wrapped,
                    }
                )
                continue

            def seal(column: str, value: Any, row_id: uuid.UUID = row.user_id, key: Any = key) -> str | None:
                return _seal(cipher, "users", column, row_id, value, key)

            updates.append(
                {
                    "b_id": row.user_id,
                    "b_name": seal("name", row.name),
                    "b_email": seal("email", email),
                    "b_birth_date": seal(
                        "birth_date", None if row.birth_date is None else date.fromisoformat(row.birth_date)
                    ),
                    "b_canac": seal("canac", row.canac),
                    "b_email_index": blind.email(email),
                    "b_canac_index": None if row.canac is None else blind.canac(row.canac),
                    "b_data_key": wrapped,
                }
            )
        conn.execute(write_user, updates)

    credential_rows = sa.select(
        _credentials.c.credential_id,
        _credentials.c.user_id,
        *(_credentials.c[name] for name in _CREDENTIAL_FIELDS),
        _users.c.data_key,
    ).select_from(_credentials.join(_users, _users.c.user_id == _credentials.c.user_id))
    write_credential = (
        sa.update(_credentials)
        .where(_credentials.c.credential_id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(f"b_{name}") for name in _CREDENTIAL_FIELDS})
    )
    for rows in _pages(conn, credential_rows, _credentials.c.credential_id):
        updates = []
        for row in rows:
            key = cipher.unwrap_data_key(row.data_key, row.user_id)
            issued = None if row.issued_at is None else date.fromisoformat(row.issued_at)
            updates.append(
                {"b_id": row.credential_id}
                | {
                    f"b_{name}": _seal(cipher, "user_credentials", name, row.credential_id, value, key)
                    for name, value in (
                        ("number", row.number),
                        ("issued_at", issued),
                        ("restrictions", row.restrictions),
                    )
                }
            )
        conn.execute(write_credential, updates)

    def seal_audit(side: str, name: str, value: Any, audit_id: uuid.UUID, key: Any) -> Any:
        if is_token(value):
            return value
        if key is None:
            return SHREDDED
        return cipher.encrypt_json(value, Cell("audit_log", f"{side}.{name}", audit_id), data_key=key)

    _audit_values(conn, seal_audit, cipher)


def _seal(
    cipher: FieldCipher, table: str, column: str, row_id: uuid.UUID, value: Any, key: Any
) -> str | None:
    if value is None:
        return None
    cell = Cell(table, column, row_id)
    if isinstance(value, date):
        return cipher.encrypt_date(value, cell, data_key=key)
    return cipher.encrypt(value, cell, data_key=key)


def downgrade() -> None:
    if not context.is_offline_mode():
        _refuse_cascading_rebuild()
        if _has_users():
            _decrypt_rows(op.get_bind())
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _as_date_column("users", "birth_date")
        _as_date_column("user_credentials", "issued_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_index(op.f("ix_users_canac_index"))
        batch.drop_index(op.f("ix_users_email_index"))
        batch.drop_column("canac_index")
        batch.drop_column("data_key")
        batch.drop_column("email_index")
        batch.alter_column(
            "name", type_=sa.String(length=200), existing_type=sa.Text(), existing_nullable=False
        )
        batch.alter_column(
            "email", type_=sa.String(length=320), existing_type=sa.Text(), existing_nullable=False
        )
        if not sqlite:
            batch.alter_column(
                "birth_date", type_=sa.Date(), existing_type=sa.Text(), postgresql_using="birth_date::date"
            )
        batch.alter_column("canac", type_=sa.String(length=6), existing_type=sa.Text())
        batch.create_unique_constraint(op.f("uq_users_email"), ["email"])
        batch.create_index(op.f("ix_users_canac"), ["canac"], unique=True)
    with op.batch_alter_table("user_credentials") as batch:
        batch.alter_column("number", type_=sa.String(length=50), existing_type=sa.Text())
        if not sqlite:
            batch.alter_column(
                "issued_at", type_=sa.Date(), existing_type=sa.Text(), postgresql_using="issued_at::date"
            )
        batch.create_check_constraint(
            "expiry_not_before_issue", "expires_at IS NULL OR issued_at IS NULL OR expires_at >= issued_at"
        )
    # Not a batch: rebuilding memory_entries would drop its full-text triggers on SQLite (3.35+ drops a column).
    op.drop_column("memory_entries", "sensitive")


def _as_date_column(table: str, column: str) -> None:
    """SQLite: make a TEXT column of ISO dates a DATE column again without the CAST a batch would copy it with
    (CAST AS DATE is CAST AS NUMERIC there: `2026-01-10` would become 2026): a new column, the values copied as they
    are, the old one dropped, the new one renamed (SQLite 3.35 and later)."""
    restored = f"{column}_restored"
    op.add_column(table, sa.Column(restored, sa.Date(), nullable=True))
    op.execute(f"UPDATE {table} SET {restored} = {column}")
    op.drop_column(table, column)
    op.execute(f"ALTER TABLE {table} RENAME COLUMN {restored} TO {column}")


def _open_memory_audit(conn: sa.Connection, cipher: FieldCipher) -> None:
    """Decrypt the sensitive memories' values in their audit rows (each the token of its memory's row), before the
    data keys go: those of users gone since read `[shredded]`."""
    statement = (
        sa.select(
            _audit.c.audit_id,
            _audit.c.user_id,
            _audit.c.record_id,
            _audit.c.old_values,
            _audit.c.new_values,
            _users.c.data_key,
        )
        .select_from(_audit.outerjoin(_users, _users.c.user_id == _audit.c.user_id))
        .where(_audit.c.table_name == "memory_entries")
    )
    rewrite = (
        sa.update(_audit)
        .where(_audit.c.audit_id == sa.bindparam("b_id"))
        .values(old_values=sa.bindparam("b_old", type_=_JSON), new_values=sa.bindparam("b_new", type_=_JSON))
    )

    def opened(values: Any, record_id: uuid.UUID, key: Any) -> Any:
        if not isinstance(values, dict) or not is_token(values.get("value")):
            return values
        if key is None:
            return values | {"value": SHREDDED}
        memory_id = uuid.UUID(str(values.get("memory_id", record_id)))
        try:
            value = cipher.decrypt_json(
                values["value"], Cell("memory_entries", "value", memory_id), data_key=key
            )
        except DecryptionError:
            return values  # an ordinary value that only looks like a token
        return values | {"value": value}

    for rows in _pages(conn, statement, _audit.c.audit_id):
        updates = []
        for row in rows:
            key = None if row.data_key is None else cipher.unwrap_data_key(row.data_key, row.user_id)
            old, new = opened(row.old_values, row.record_id, key), opened(row.new_values, row.record_id, key)
            if (old, new) != (row.old_values, row.new_values):
                updates.append({"b_id": row.audit_id, "b_old": old, "b_new": new})
        if updates:
            conn.execute(rewrite, updates)


def _decrypt_rows(conn: sa.Connection) -> None:
    encryption = _keys()
    cipher: FieldCipher = encryption.fields

    def opened(table: str, column: str, row_id: uuid.UUID, token: str | None, key: Any) -> str | None:
        if token is None or not is_token(token):
            return token  # a tombstone's placeholder
        return _text(cipher.decrypt_value(token, Cell(table, column, row_id), data_key=key))

    def open_audit(side: str, name: str, value: Any, audit_id: uuid.UUID, key: Any) -> Any:
        if not is_token(value) or key is None:
            return SHREDDED if is_token(value) else value
        return cipher.decrypt_json(value, Cell("audit_log", f"{side}.{name}", audit_id), data_key=key)

    _audit_values(conn, open_audit, cipher)
    _open_memory_audit(conn, cipher)

    memory_rows = (
        sa.select(_memories.c.memory_id, _memories.c.user_id, _memories.c.value, _users.c.data_key)
        .select_from(_memories.join(_users, _users.c.user_id == _memories.c.user_id))
        .where(_memories.c.sensitive)
    )
    write_memory = (
        sa.update(_memories)
        .where(_memories.c.memory_id == sa.bindparam("b_id"))
        .values(value=sa.bindparam("b_value", type_=_JSON))
    )
    for rows in _pages(conn, memory_rows, _memories.c.memory_id):
        conn.execute(
            write_memory,
            [
                {
                    "b_id": row.memory_id,
                    "b_value": cipher.decrypt_json(
                        row.value,
                        Cell("memory_entries", "value", row.memory_id),
                        data_key=cipher.unwrap_data_key(row.data_key, row.user_id),
                    ),
                }
                for row in rows
            ],
        )

    credential_rows = sa.select(
        _credentials.c.credential_id,
        _credentials.c.user_id,
        *(_credentials.c[name] for name in _CREDENTIAL_FIELDS),
        _users.c.data_key,
    ).select_from(_credentials.join(_users, _users.c.user_id == _credentials.c.user_id))
    write_credential = (
        sa.update(_credentials)
        .where(_credentials.c.credential_id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(f"b_{name}") for name in _CREDENTIAL_FIELDS})
    )
    for rows in _pages(conn, credential_rows, _credentials.c.credential_id):
        updates = []
        for row in rows:
            key = None if row.data_key is None else cipher.unwrap_data_key(row.data_key, row.user_id)
            updates.append(
                {"b_id": row.credential_id}
                | {
                    f"b_{name}": opened("user_credentials", name, row.credential_id, row[index + 2], key)
                    for index, name in enumerate(_CREDENTIAL_FIELDS)
                }
            )
        conn.execute(write_credential, updates)

    user_rows = sa.select(_users.c.user_id, *(_users.c[name] for name in _USER_FIELDS), _users.c.data_key)
    write_user = (
        sa.update(_users)
        .where(_users.c.user_id == sa.bindparam("b_id"))
        .values({name: sa.bindparam(f"b_{name}") for name in _USER_FIELDS})
    )
    for rows in _pages(conn, user_rows, _users.c.user_id):
        updates = []
        for row in rows:
            key = None if row.data_key is None else cipher.unwrap_data_key(row.data_key, row.user_id)
            updates.append(
                {"b_id": row.user_id}
                | {
                    f"b_{name}": opened("users", name, row.user_id, row[index + 1], key)
                    for index, name in enumerate(_USER_FIELDS)
                }
            )
        conn.execute(write_user, updates)
