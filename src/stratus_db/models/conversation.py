from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import JSONType, UTCDateTime


class ConversationStatus(StrEnum):
    active = "active"
    archived = "archived"
    deleted = "deleted"


class ConversationRow(Base):
    __tablename__ = "conversations"

    conversation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.user_id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[ConversationStatus] = mapped_column(
        Enum(
            ConversationStatus,
            native_enum=False,
            create_constraint=True,
            length=16,
            name="conversation_status",
            validate_strings=True,
        )
    )
    context: Mapped[dict[str, Any]] = mapped_column(JSONType)
    summary: Mapped[str | None] = mapped_column(Text)
    # compress_history folded messages 1..summarized_through_seq into `summary`: they leave the context window.
    summarized_through_seq: Mapped[int] = mapped_column(Integer, server_default="0")
    summarized_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    """Tokens of the folded messages: total_tokens − summarized_tokens is what the context window still holds."""
    # message_count doubles as the sequence counter: an append takes seq = message_count + 1 under the row lock.
    message_count: Mapped[int] = mapped_column(Integer)
    # 64 bits: a message may count up to 10 million tokens, and a conversation takes any number of messages.
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("message_count >= 0 AND total_tokens >= 0", name="counters_non_negative"),
        CheckConstraint(
            "summarized_through_seq BETWEEN 0 AND message_count AND summarized_tokens BETWEEN 0 AND total_tokens",
            name="summarized_range",
        ),
        # list_conversations: one user's conversations, most recent activity first.
        Index(None, "user_id", "last_activity_at", "conversation_id"),
        # The target of messages' (conversation_id, user_id) foreign key: a message belongs to its owner's conversation.
        UniqueConstraint("conversation_id", "user_id"),
    )
