from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import UTCDateTime
from stratus_db.users.credentials import CredentialKind


class CredentialRow(Base):
    """One ANAC credential a user holds: a licence, a rating or a medical certificate (users/credentials.py)."""

    __tablename__ = "user_credentials"

    credential_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    # The canonical code of the catalogue (canonical_code): PPR, IFRA, CMA1, TIPO:A320 (at most 5 + 10 characters).
    code: Mapped[str] = mapped_column(String(16))
    kind: Mapped[CredentialKind] = mapped_column(
        Enum(
            CredentialKind,
            native_enum=False,
            create_constraint=True,
            length=16,
            name="credential_kind",
            validate_strings=True,
        )
    )
    number: Mapped[str | None] = mapped_column(String(50))
    issued_at: Mapped[date | None] = mapped_column(Date)
    expires_at: Mapped[date | None] = mapped_column(Date)
    restrictions: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # One credential per code per user; it also serves every per-user read (credential_status, the sync of
        # users.licenses).
        UniqueConstraint("user_id", "code"),
        CheckConstraint(
            "expires_at IS NULL OR issued_at IS NULL OR expires_at >= issued_at",
            name="expiry_not_before_issue",
        ),
        # expiring_credentials: every user's credentials expiring in a window, keyset-paginated by (expiry, id).
        Index(None, "expires_at", "credential_id"),
    )
