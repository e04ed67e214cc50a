"""audit append-only: the database refuses UPDATE and DELETE on audit_log, except under an erasure's permit

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-11 03:00:00

Both backends (docs/audit.md, "Append-only"). A new table, `audit_rewrite_permits`, and BEFORE UPDATE / BEFORE DELETE
row triggers on `audit_log` that raise unless a permit row is visible: erasure (LGPD) inserts one, pseudonymises the
trail, and deletes it in the same transaction, so no other transaction ever sees a permit. Anyone else's UPDATE or
DELETE — an application bug, a hand-written statement in psql — is refused (PostgreSQL SQLSTATE 23001, SQLite
SQLITE_CONSTRAINT). TRUNCATE is not a row operation and is not covered. This stops mistakes, not an administrator
(who can write a permit, or drop the trigger): the seals are what show such changes (`stratus-db audit verify`).
The downgrade drops the triggers and the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE = (
    "audit_log is append-only (its rows are never updated or deleted, except by an erasure; docs/audit.md)"
)

POSTGRES_FUNCTION = f"""
CREATE FUNCTION stratus_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM audit_rewrite_permits) THEN
        RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "audit_rewrite_permits",
        sa.Column("permit_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("permit_id", name=op.f("pk_audit_rewrite_permits")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_append_only_{event.lower()} BEFORE {event} ON audit_log "
                "FOR EACH ROW EXECUTE FUNCTION stratus_audit_append_only()"
            )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_append_only_{event.lower()} BEFORE {event} ON audit_log "
                "WHEN NOT EXISTS (SELECT 1 FROM audit_rewrite_permits) "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )


def downgrade() -> None:
    for event in ("update", "delete"):
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER audit_log_append_only_{event} ON audit_log")
        else:
            op.execute(f"DROP TRIGGER audit_log_append_only_{event}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION stratus_audit_append_only()")
    op.drop_table("audit_rewrite_permits")
