from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import UTCDateTime


class ApiKeyRow(Base):
    """A service's key to the HTTP service (security/api_keys.py): the principal it stands for, and the SHA-256 of
    its secret, never the secret itself."""

    __tablename__ = "api_keys"

    key_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    principal_kind: Mapped[str] = mapped_column(String(20))
    principal_id: Mapped[str] = mapped_column(String(200))
    # The user a user's or an agent's key acts for (Principal.user_id); None for any other kind. Named user_id as
    # every table of a user's rows: erasure deletes them with the rest (privacy/erasure.py owned_tables).
    user_id: Mapped[uuid.UUID | None] = mapped_column()
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
