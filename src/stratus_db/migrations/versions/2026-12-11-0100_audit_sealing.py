"""audit sealing: the hash chain over the audit trail, its checkpoints, and the erasures' redactions

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-11 01:00:00

Both backends (docs/audit.md). Three new tables: `audit_chain` (one row per sealed
audit row: its position, the hash of its fields and the chain's hash up to it), `audit_checkpoints` (one row per run
of the sealer: the range it sealed and the head) and `audit_redactions` (the fields an erasure rewrote in sealed rows,
as hashes before and after); `audit_log` gains two indexes, for AuditManager.query(actor=...) and (trace_id=...).
Existing audit rows are sealed by the first run of the sealer (`stratus-db audit seal`),
not here. The downgrade drops the three tables, and with them every seal.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_chain",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.Column("chain_hash", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_audit_chain")),
        sa.UniqueConstraint("audit_id", name=op.f("uq_audit_chain_audit_id")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("checkpoint_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_position", sa.BigInteger(), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.String(length=64), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("checkpoint_id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_table(
        "audit_redactions",
        sa.Column("audit_id", sa.Uuid(), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("original_hash", sa.String(length=64), nullable=False),
        sa.Column("redacted_hash", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("audit_id", "field", "original_hash", name=op.f("pk_audit_redactions")),
    )

    op.create_index(
        op.f("ix_audit_log_actor_timestamp_audit_id"), "audit_log", ["actor", "timestamp", "audit_id"]
    )
    op.create_index(op.f("ix_audit_log_trace_id"), "audit_log", ["trace_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_trace_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_actor_timestamp_audit_id"), table_name="audit_log")
    op.drop_table("audit_redactions")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_chain")
