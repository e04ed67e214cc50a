"""user credentials: each ANAC licence, rating and medical certificate a user holds, one row each

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 01:00:00

Both backends. `user_credentials` holds the canonical code (users/credentials.py), its kind, and the optional number,
issue and expiry dates and restrictions; `users.licenses` stays, as the list of the user's credential codes that
UserManager keeps in step (docs/users.md).

The backfill turns each user's `licenses` into credentials, read as create_user reads them (licence_codes:
`["PP", "PC", "IFR"]` → PPR, PCM, IFRA) and rewrites the list in canonical codes. A user whose list the catalogue
refuses (an unknown or ambiguous code, e.g. `PLA/IFR` or `IFR` alone) gets credentials for the codes it accepts one
by one, and keeps the list exactly as it was, so nothing is lost; the next change of that user's credentials
rewrites it. An offline script (`migrate --sql`) leaves the backfill out and says so in a comment. The downgrade drops the table; `users.licenses` keeps the canonical codes.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

from stratus_db.errors import ValidationError
from stratus_db.kit.ids import new_id
from stratus_db.users.credentials import credential_kind, licence_codes

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_credentials",
        sa.Column("credential_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "licence",
                "rating",
                "medical",
                name="credential_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("number", sa.String(length=50), nullable=True),
        sa.Column("issued_at", sa.Date(), nullable=True),
        sa.Column("expires_at", sa.Date(), nullable=True),
        sa.Column("restrictions", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "expires_at IS NULL OR issued_at IS NULL OR expires_at >= issued_at",
            name=op.f("ck_user_credentials_expiry_not_before_issue"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_user_credentials_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("credential_id", name=op.f("pk_user_credentials")),
        sa.UniqueConstraint("user_id", "code", name=op.f("uq_user_credentials_user_id_code")),
    )
    op.create_index(
        op.f("ix_user_credentials_expires_at_credential_id"),
        "user_credentials",
        ["expires_at", "credential_id"],
        unique=False,
    )
    if context.is_offline_mode():
        # A reviewed SQL script (`migrate --sql`) cannot read the users it would convert: say so in it.
        op.execute(
            "-- revision 0006: users.licenses were NOT turned into user_credentials by this script (the backfill "
            "reads each user's list through the ANAC catalogue, which only an online `migrate` can do)"
        )
    else:
        _backfill()


def _accepted_one_by_one(codes: list[str]) -> list[str]:
    accepted: list[str] = []
    for code in codes:
        try:
            accepted += licence_codes([code])
        except ValidationError:
            continue
    return list(dict.fromkeys(accepted))


def _backfill() -> None:
    users = sa.table("users", sa.column("user_id", sa.Uuid()), sa.column("licenses", sa.JSON()))
    credentials = sa.table(
        "user_credentials",
        sa.column("credential_id", sa.Uuid()),
        sa.column("user_id", sa.Uuid()),
        sa.column("code", sa.String()),
        sa.column("kind", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    now = datetime.now(UTC)
    rows: list[dict[str, object]] = []
    rewritten: list[dict[str, object]] = []
    for user_id, licenses in bind.execute(sa.select(users.c.user_id, users.c.licenses)):
        if not isinstance(licenses, list) or not licenses:
            continue
        text = [code for code in licenses if isinstance(code, str)]
        try:
            codes = licence_codes(text)
            if codes != licenses:
                rewritten.append({"key": user_id, "licenses": codes})
        except ValidationError:
            codes = _accepted_one_by_one(text)
        rows += [
            {
                "credential_id": new_id(),
                "user_id": user_id,
                "code": code,
                "kind": credential_kind(code).value,
                "created_at": now,
                "updated_at": now,
            }
            for code in codes
        ]
    if rows:
        bind.execute(sa.insert(credentials), rows)
    if rewritten:
        bind.execute(
            sa.update(users)
            .where(users.c.user_id == sa.bindparam("key"))
            .values(licenses=sa.bindparam("licenses")),
            rewritten,
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_user_credentials_expires_at_credential_id"), table_name="user_credentials")
    op.drop_table("user_credentials")
