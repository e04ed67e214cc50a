from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import NullableJSONType, UTCDateTime


class AuditRow(Base):
    """Append-only trail of every change. No foreign keys: it outlives the users and rows it describes."""

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

    __table_args__ = (
        # AuditManager.query(user_id=...): one subject's history, newest first.
        Index(None, "user_id", "timestamp", "audit_id"),
        # AuditManager.query(record_id=...): one record's history, newest first.
        Index(None, "record_id", "timestamp", "audit_id"),
        # AuditManager.query() without subject or record: everything in a time range, newest first.
        Index(None, "timestamp", "audit_id"),
    )
