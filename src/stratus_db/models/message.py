from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Enum,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import JSONType, UTCDateTime


class MessageType(StrEnum):
    user_input = "user_input"
    agent_response = "agent_response"
    system = "system"


class MessageRow(Base):
    """One turn of a conversation. A stored row is never rewritten."""

    __tablename__ = "messages"

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column()
    # The conversation's owner: every query filters by it, and a distributed deployment shards by it. The composite
    # foreign key below makes it impossible for a message to name an owner its conversation does not have.
    user_id: Mapped[uuid.UUID] = mapped_column()
    seq: Mapped[int] = mapped_column(Integer)
    agent_name: Mapped[str | None] = mapped_column(String(100))
    message_type: Mapped[MessageType] = mapped_column(
        Enum(
            MessageType,
            native_enum=False,
            create_constraint=True,
            length=16,
            name="message_type",
            validate_strings=True,
        )
    )
    # Exactly one of the two holds the body: `content` as written, or `packed_content`, its zstd frame
    # (conversations/packing.py), once an archived conversation has been packed.
    content: Mapped[str | None] = mapped_column(Text)
    packed_content: Mapped[bytes | None] = mapped_column(LargeBinary)
    # `metadata` is reserved on declarative classes; the column keeps the spec's name.
    message_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    tokens_used: Mapped[int] = mapped_column(Integer)
    response_time: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        # get_messages reads one conversation in sequence order; the constraint also forbids a duplicate seq.
        UniqueConstraint("conversation_id", "seq"),
        ForeignKeyConstraint(
            ["conversation_id", "user_id"],
            ["conversations.conversation_id", "conversations.user_id"],
            name="fk_messages_conversation_id_user_id_conversations",
            ondelete="CASCADE",
        ),
        CheckConstraint("seq >= 1 AND tokens_used >= 0", name="seq_and_tokens"),
        CheckConstraint("(content IS NULL) <> (packed_content IS NULL)", name="one_body"),
        # Usage statistics and search: one user's messages over a time range.
        Index(None, "user_id", "created_at"),
        # The metrics' range scans (docs/metrics.md). BRIN on PostgreSQL: messages arrive in time order, so a few
        # kilobytes of block ranges find a day's rows at almost no cost per append; SQLite has only B-trees.
        Index(None, "created_at", postgresql_using="brin"),
    )
