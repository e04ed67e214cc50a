from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Date, Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import UTCDateTime
from stratus_db.users.credentials import CredentialKind


class ExpiryBasis(StrEnum):
    """Where a credential's `expires_at` comes from."""

    recorded = "recorded"
    """Given by the caller (the date printed on the document): never overwritten by a computation."""
    computed = "computed"
    """Computed for a medical certificate from its issue date and the holder's birth date (credentials.
    medical_validity); recomputed when either changes, cleared when the birth date is removed."""


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
    # number, issued_at and restrictions hold tokens under the holder's data key (security/personal.py): a
    # medical certificate's restrictions are health data (LGPD Art. 11). The code and the expiry stay in clear for
    # list_users(credential_code=...) and expiring_credentials (docs/security.md, threat model).
    number: Mapped[str | None] = mapped_column(Text)
    issued_at: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[date | None] = mapped_column(Date)
    # Set exactly when expires_at is: whether the date was given or computed (so expiring_credentials, which reads
    # expires_at through its index, sees computed expiries too).
    expiry_basis: Mapped[ExpiryBasis | None] = mapped_column(
        Enum(
            ExpiryBasis,
            native_enum=False,
            create_constraint=True,
            length=16,
            name="expiry_basis",
            validate_strings=True,
        )
    )
    restrictions: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # One credential per code per user; it also serves every per-user read (credential_status, the sync of
        # users.licenses).
        UniqueConstraint("user_id", "code"),
        # The expiry is not before the issue: checked by UserManager, since issued_at is encrypted.
        CheckConstraint("(expires_at IS NULL) = (expiry_basis IS NULL)", name="expiry_has_basis"),
        # expiring_credentials: every user's credentials expiring in a window, keyset-paginated by (expiry, id).
        Index(None, "expires_at", "credential_id"),
        # list_users(credential_code=...): the holders of one code in user order, a range of this index joined to
        # users by key.
        Index(None, "code", "user_id"),
    )
