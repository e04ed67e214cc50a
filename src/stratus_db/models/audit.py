from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import NullableJSONType, UTCDateTime

APPEND_TABLE, APPEND_ACTION = "messages", "create"
APART_FROM_APPENDS = f"(table_name <> '{APPEND_TABLE}' OR action <> '{APPEND_ACTION}')"
"""The predicate of audit_log's table and action indexes: every row but a message append's. A query uses them only
when its WHERE clause holds this very text (AuditRepository adds it whenever the filters exclude appends): PostgreSQL
cannot prove it from a parameter, and SQLite proves a partial index's predicate only from an identical term."""


ACTING_FOR_SOMEONE = "on_behalf_of IS NOT NULL"
"""The predicate of the on_behalf_of index: agents' rows only."""


class AuditRow(Base):
    """Append-only trail of every change. No foreign keys: it outlives the users and rows it describes.

    On PostgreSQL the table is partitioned by month of `timestamp`, and its primary key is (audit_id, timestamp), as
    a partitioned table's must hold the partition key (revision 0013); audit ids are unique all the same."""

    __tablename__ = "audit_log"

    audit_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The data subject whose data changed (None for system-wide events).
    user_id: Mapped[uuid.UUID | None] = mapped_column()
    action: Mapped[str] = mapped_column(String(50))
    table_name: Mapped[str] = mapped_column(String(63))
    record_id: Mapped[uuid.UUID | None] = mapped_column()
    old_values: Mapped[Any | None] = mapped_column(NullableJSONType)
    new_values: Mapped[Any | None] = mapped_column(NullableJSONType)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    # Who acted (`kind:id` of the principal), under which trace and for which purpose.
    actor: Mapped[str] = mapped_column(String(210))
    trace_id: Mapped[str | None] = mapped_column(String(64))
    purpose: Mapped[str | None] = mapped_column(String(100))
    # The user an agent principal acted for (None for any other principal): `agent:<name>` alone does not say.
    on_behalf_of: Mapped[uuid.UUID | None] = mapped_column()

    __table_args__ = (
        # AuditManager.query(user_id=...): one subject's history, newest first.
        Index(None, "user_id", "timestamp", "audit_id"),
        # AuditManager.query(record_id=...): one record's history, newest first.
        Index(None, "record_id", "timestamp", "audit_id"),
        # AuditManager.query() without subject or record: everything in a time range, newest first.
        Index(None, "timestamp", "audit_id"),
        # AuditManager.query(actor=...): what one principal did, newest first.
        Index(None, "actor", "timestamp", "audit_id"),
        # AuditManager.query(trace_id=...): every row one request wrote.
        Index(None, "trace_id"),
        # Erasure: the rows of an agent acting for the person (agents' rows only).
        Index(
            None,
            "on_behalf_of",
            postgresql_where=text(ACTING_FOR_SOMEONE),
            sqlite_where=text(ACTING_FOR_SOMEONE),
        ),
        # AuditManager.query(table=...) and (action=...): one table's history, every
        # erasure, export, refusal…, newest first. Partial: message appends, most of the trail and its hot path, are
        # left out (a filter that asks for them reads the time index, where nearly every row is one).
        Index(
            None,
            "table_name",
            "timestamp",
            "audit_id",
            postgresql_where=text(APART_FROM_APPENDS),
            sqlite_where=text(APART_FROM_APPENDS),
        ),
        Index(
            None,
            "action",
            "timestamp",
            "audit_id",
            postgresql_where=text(APART_FROM_APPENDS),
            sqlite_where=text(APART_FROM_APPENDS),
        ),
    )


class AuditChainRow(Base):
    """The seal of one audit row (audit/sealing.py): its place in the hash chain, the hash of its fields and the
    chain's hash up to it. Written by the sealer only, after the audit row has committed."""

    __tablename__ = "audit_chain"

    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    audit_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    row_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))
    checkpoint_id: Mapped[int] = mapped_column(BigInteger)


class AuditCheckpointRow(Base):
    """One run of the sealer: the positions it sealed and the chain's hash after them (the head to keep elsewhere)."""

    __tablename__ = "audit_checkpoints"

    checkpoint_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_position: Mapped[int] = mapped_column(BigInteger)
    last_position: Mapped[int] = mapped_column(BigInteger)
    head: Mapped[str] = mapped_column(String(64))
    # Set when retention purged its rows (and their seals): the head stays, and verification starts after it.
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditRedactionRow(Base):
    """A field of an audit row that an erasure rewrote (LGPD): the keyed hashes of the field before and after, so
    that verification accepts exactly that rewrite and nothing else."""

    __tablename__ = "audit_redactions"

    audit_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    field: Mapped[str] = mapped_column(String(32), primary_key=True)
    # A field rewritten by two erasures has two rows: verification follows them back to the value sealed.
    original_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    redacted_hash: Mapped[str] = mapped_column(String(64))
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRewritePermitRow(Base):
    """While a row is here, in the transaction that wrote it, audit_log rows may be updated or deleted; otherwise the
    database refuses (revision 0012's triggers). Erasure writes one, rewrites, and deletes it before committing, so no
    other transaction ever sees it (docs/audit.md, "Append-only")."""

    __tablename__ = "audit_rewrite_permits"

    permit_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    reason: Mapped[str] = mapped_column(String(100))
