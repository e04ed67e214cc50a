from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import UTCDateTime


class ConsentPurpose(StrEnum):
    """What a user may consent to (LGPD Art. 8): one purpose per kind of processing that needs consent.

    Adding a purpose is a migration (the column's CHECK constraint lists them). docs/privacy.md says which purposes the
    library checks itself and where; the others are recorded for the host to check with `has_consent`.
    """

    memory_personalisation = "memory_personalisation"
    """The agents remember facts about the user across conversations (memories) and use them to tailor answers."""
    external_summarizer = "external_summarizer"
    """Conversation text is sent to a summarizer outside this process (OpenAI, a host's chat model) to fold older
    messages into a summary; the built-in extractive summarizer sends nothing out and needs no consent."""
    analytics = "analytics"
    """Usage of the assistant is analysed to improve the product (beyond what operating the service needs)."""
    marketing = "marketing"
    """The user receives offers and news (courses, products) by e-mail or in the app."""
    model_improvement = "model_improvement"
    """Conversations may be used to evaluate and improve the assistant's models and prompts."""


class ConsentAction(StrEnum):
    granted = "granted"
    revoked = "revoked"


class ConsentRow(Base):
    """One consent event: a user granted or revoked consent to one purpose. Append-only: the library never updates or
    deletes a row (erasing the user deletes them with the user); the latest event of a (user, purpose) decides."""

    __tablename__ = "user_consents"

    consent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    purpose: Mapped[ConsentPurpose] = mapped_column(
        Enum(
            ConsentPurpose,
            native_enum=False,
            create_constraint=True,
            length=32,
            name="consent_purpose",
            validate_strings=True,
        )
    )
    action: Mapped[ConsentAction] = mapped_column(
        Enum(
            ConsentAction,
            native_enum=False,
            create_constraint=True,
            length=16,
            name="consent_action",
            validate_strings=True,
        )
    )
    # The version of the consent text the user was shown; a revocation may name none.
    text_version: Mapped[str | None] = mapped_column(String(50))
    # Where the user expressed it: app, web, api, support… (privacy/consent_schemas.py Channel).
    channel: Mapped[str] = mapped_column(String(50))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # A grant is consent to a text: it always names the version shown.
        CheckConstraint("action = 'revoked' OR text_version IS NOT NULL", name="grant_names_text_version"),
        # has_consent and the consent checks: the latest event of one (user, purpose), one index descent backwards;
        # consents() and consent_history() read one user's few rows through its leading column.
        Index(None, "user_id", "purpose", "occurred_at", "consent_id"),
    )
