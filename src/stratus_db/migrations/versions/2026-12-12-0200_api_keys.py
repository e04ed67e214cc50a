"""api keys: the HTTP service's keys for services, stored as the hash of their secret

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-12 02:00:00

Both backends. A new table, `api_keys` (security/api_keys.py, docs/api.md "Authentication"): each key's id, name,
the principal it stands for, and the SHA-256 of its secret (the secret is shown once, when the key is made, and
never stored), the user it acts for (`user_id`: erasing that user deletes it), when it was made, expires and was
revoked. On PostgreSQL it gets revision 0011's outside-write trigger,
as every table of data does. The downgrade drops the table, and with it every key.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("principal_kind", sa.String(length=20), nullable=False),
        sa.Column("principal_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER audit_outside_write AFTER INSERT OR UPDATE OR DELETE ON api_keys FOR EACH ROW "
            "WHEN (current_setting('application_name') IS DISTINCT FROM 'stratus_db') "
            "EXECUTE FUNCTION stratus_audit_outside_write('key_id')"
        )


def downgrade() -> None:
    op.drop_table("api_keys")
