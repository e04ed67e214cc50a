"""user consents: the consent ledger (LGPD Art. 8, 18 IX), one row per grant or revocation

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09 02:00:00

Both backends. `user_consents` is append-only: each row is one event (a user granted or revoked consent to one purpose,
with the version of the text shown, the channel and the time); the latest event of a (user, purpose) decides
(privacy/consent.py, docs/privacy.md). It refers to `users` only through its foreign key (deleting a user deletes
their events), so it depends on no `users` column. Nothing to backfill: no consent was recorded before. The downgrade
drops the table and, with it, every recorded consent.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_consents",
        sa.Column("consent_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "memory_personalisation",
                "external_summarizer",
                "analytics",
                "marketing",
                "model_improvement",
                name="consent_purpose",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "action",
            sa.Enum(
                "granted",
                "revoked",
                name="consent_action",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("text_version", sa.String(length=50), nullable=True),
        sa.Column("channel", sa.String(length=50), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "action = 'revoked' OR text_version IS NOT NULL",
            name=op.f("ck_user_consents_grant_names_text_version"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_user_consents_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_user_consents")),
    )
    op.create_index(
        op.f("ix_user_consents_user_id_purpose_occurred_at_consent_id"),
        "user_consents",
        ["user_id", "purpose", "occurred_at", "consent_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_user_consents_user_id_purpose_occurred_at_consent_id"), table_name="user_consents")
    op.drop_table("user_consents")
