"""analytics: daily rollups of the messages, per-minute service samples, an index on messages by time

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-13 01:00:00

Both backends (docs/metrics.md). `activity_daily` and `response_time_daily` hold the complete local days that
`stratus-db rollup` has counted, `rollup_state` how far they go and in which time zone, and `service_samples` each
process's per-minute counts of operations, requests, probes and cache lookups. `activity_daily` rows are a user's
(deleted with them). `messages.created_at` gets an index for the metrics' range scans: BRIN on PostgreSQL (messages
arrive in time order), a B-tree on SQLite. The tables are derived or operational data, not audited: no outside-write
trigger. The downgrade drops them and the index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "activity_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("agent_name", sa.String(length=100), nullable=False),
        sa.Column("message_type", sa.String(length=16), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("timed", sa.Integer(), nullable=False),
        sa.Column("time_total", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.user_id"],
            name=op.f("fk_activity_daily_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "day", "user_id", "agent_name", "message_type", name=op.f("pk_activity_daily")
        ),
    )
    op.create_index(op.f("ix_activity_daily_user_id"), "activity_daily", ["user_id"])
    op.create_table(
        "response_time_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("agent_name", sa.String(length=100), nullable=False),
        sa.Column("bucket", sa.SmallInteger(), nullable=False),
        sa.Column("responses", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "agent_name", "bucket", name=op.f("pk_response_time_daily")),
    )
    op.create_table(
        "rollup_state",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("rolled_through", sa.Date(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_rollup_state")),
    )
    op.create_table(
        "service_samples",
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "instance", "kind", "name", name=op.f("pk_service_samples")),
    )
    op.create_index(op.f("ix_messages_created_at"), "messages", ["created_at"], postgresql_using="brin")


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_created_at"), table_name="messages")
    op.drop_table("service_samples")
    op.drop_table("rollup_state")
    op.drop_table("response_time_daily")
    op.drop_index(op.f("ix_activity_daily_user_id"), table_name="activity_daily")
    op.drop_table("activity_daily")
