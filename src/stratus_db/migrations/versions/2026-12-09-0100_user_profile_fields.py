"""user profile fields: birth date, CANAC, deactivation; the basis of a credential's expiry; list_users indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 01:00:00

Both backends. `users` gains three nullable columns: `birth_date` (a medical certificate's validity follows from the
holder's age), `canac` (the person's ANAC code, unique when set: a unique index, in which NULLs are distinct on both
backends) and `deactivated_at`. `user_credentials` gains `expiry_basis`: `recorded` (the caller gave the date) or
`computed` (UserManager computed it for a medical certificate from the birth date), set exactly when `expires_at` is
(a CHECK). Every existing expiry was given by a caller, so the upgrade marks them `recorded`; no birth date is known
yet, so nothing is computed.

Indexes, each named after its query: `users (experience_level, user_id)` and `users (last_active)` for the list_users
filters and active_users (docs/users.md), `user_credentials (code, user_id)` for list_users(credential_code=...).

On SQLite the `users` columns and the indexes are plain ALTER TABLE / CREATE INDEX, up and down (ALTER TABLE DROP
COLUMN, SQLite 3.35 and later; an older SQLite rebuilds the table); `user_credentials` is rebuilt (batch mode: SQLite
cannot add a CHECK to a table), which no other table references.

The downgrade drops them all. Computed expiries are cleared first (set to NULL): they were derived from the birth
dates the downgrade drops, and the older code would take them for dates a caller gave. Recorded ones stay.
"""

import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_credentials = sa.table(
    "user_credentials",
    sa.column("expires_at", sa.Date()),
    sa.column("expiry_basis", sa.String()),
)


_USER_COLUMNS = ("deactivated_at", "canac", "birth_date")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("birth_date", sa.Date(), nullable=True))
        batch.add_column(sa.Column("canac", sa.String(length=6), nullable=True))
        batch.add_column(sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_users_canac"), "users", ["canac"], unique=True)
    op.create_index(op.f("ix_users_experience_level_user_id"), "users", ["experience_level", "user_id"])
    op.create_index(op.f("ix_users_last_active"), "users", ["last_active"])

    with op.batch_alter_table("user_credentials") as batch:
        batch.add_column(
            sa.Column(
                "expiry_basis",
                sa.Enum(
                    "recorded",
                    "computed",
                    name="expiry_basis",
                    native_enum=False,
                    create_constraint=True,
                    length=16,
                ),
                nullable=True,
            )
        )
    op.execute(
        _credentials.update().where(_credentials.c.expires_at.is_not(None)).values(expiry_basis="recorded")
    )
    with op.batch_alter_table("user_credentials") as batch:
        batch.create_check_constraint("expiry_has_basis", "(expires_at IS NULL) = (expiry_basis IS NULL)")
    op.create_index(op.f("ix_user_credentials_code_user_id"), "user_credentials", ["code", "user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_user_credentials_code_user_id"), table_name="user_credentials")
    op.execute(
        _credentials.update()
        .where(_credentials.c.expiry_basis == "computed")
        .values(expires_at=None, expiry_basis=None)
    )
    with op.batch_alter_table("user_credentials") as batch:
        batch.drop_constraint(op.f("ck_user_credentials_expiry_has_basis"), type_="check")
        # The enum's own CHECK: SQLite's rebuilt table would otherwise keep it, naming a column that is gone.
        batch.drop_constraint(op.f("ck_user_credentials_expiry_basis"), type_="check")
        batch.drop_column("expiry_basis")

    op.drop_index(op.f("ix_users_last_active"), table_name="users")
    op.drop_index(op.f("ix_users_experience_level_user_id"), table_name="users")
    op.drop_index(op.f("ix_users_canac"), table_name="users")
    # aiosqlite runs on the standard library's sqlite3: its library version is the one that runs the statements.
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        # Before 3.35 SQLite cannot drop a column: rebuild the table (db.downgrade turns foreign keys off for it).
        with op.batch_alter_table("users") as batch:
            for column in _USER_COLUMNS:
                batch.drop_column(column)
    else:
        # Not a rebuild: `users` is the parent of every user-owned table, and dropping it to rebuild it is what
        # SQLite would do with foreign keys on, should a migration ever run with them on.
        for column in _USER_COLUMNS:
            op.drop_column("users", column)
