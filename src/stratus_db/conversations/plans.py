"""What an append writes, decided in pure code (no I/O) and once for every path.

`plan_message` turns a validated message into the row to insert (`NewMessage`; its number is taken when it is
written) and `message_audit` gives its audit entry. The one-message statement, the coalesced batch statement
(PostgreSQL), the Core path (SQLite, a caller's `tx`), `add_messages` and `import_messages` all write these.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from stratus_db.audit.rows import AuditContext, AuditEntry
from stratus_db.audit.schemas import AuditAction
from stratus_db.conversations.schemas import Message, MessageInput
from stratus_db.kit.ids import new_id
from stratus_db.kit.tokens import TokenCounter
from stratus_db.models import MessageType

MESSAGES = "messages"


class NewMessage(NamedTuple):
    """A message to append: every column but its sequence number, which the write takes. A NamedTuple: an import
    makes one per message, and a frozen dataclass costs four times as much to make."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    agent_name: str | None
    message_type: MessageType
    content: str
    metadata: dict[str, Any]
    tokens_used: int
    response_time: float | None
    created_at: datetime
    """When it was written (the call's time, or an import's own); the write keeps it no older than the last one."""

    def columns(self, seq: int, created_at: datetime) -> dict[str, Any]:
        """The messages row, numbered `seq` at `created_at`."""
        return {
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "user_id": self.user_id,
            "seq": seq,
            "agent_name": self.agent_name,
            "message_type": self.message_type,
            "content": self.content,
            "packed_content": None,
            "metadata": self.metadata,
            "tokens_used": self.tokens_used,
            "response_time": self.response_time,
            "created_at": created_at,
        }

    def written(self, seq: int, created_at: datetime) -> Message:
        """The message as the API returns it, once written as `seq` at `created_at`."""
        return Message(
            message_id=self.message_id,
            conversation_id=self.conversation_id,
            user_id=self.user_id,
            seq=seq,
            agent_name=self.agent_name,
            message_type=self.message_type,
            content=self.content,
            metadata=self.metadata,
            tokens_used=self.tokens_used,
            response_time=self.response_time,
            created_at=created_at,
        )


def plan_message(
    data: MessageInput,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    now: datetime,
    count_tokens: TokenCounter,
    message_id: uuid.UUID | None = None,
) -> NewMessage:
    """The message `data` (validated) asks to append: a new UUIDv7 unless `message_id` is given, and its tokens
    counted by `count_tokens` unless given (the handle's counter: kit/tokens.py)."""
    return NewMessage(
        message_id=new_id() if message_id is None else message_id,
        conversation_id=conversation_id,
        user_id=user_id,
        agent_name=data.agent_name,
        message_type=data.message_type,
        content=data.content,
        metadata=data.metadata,
        tokens_used=data.tokens_used if data.tokens_used is not None else count_tokens(data.content),
        response_time=data.response_time,
        created_at=now,
    )


def message_audit(message: NewMessage, context: AuditContext) -> AuditEntry:
    """A message's audit entry, but its number (`numbered` adds it; a batch statement adds it itself).

    The audit trail outlives erasure, so it records that a message was written, never what it said."""
    return AuditEntry(
        action=AuditAction.create,
        table_name=MESSAGES,
        record_id=message.message_id,
        user_id=message.user_id,
        timestamp=message.created_at,
        new_values={
            "conversation_id": str(message.conversation_id),
            "message_type": message.message_type.value,
            "agent_name": message.agent_name,
            "tokens_used": message.tokens_used,
            "content_chars": len(message.content),
        },
        old_values=None,
        context=context,
        audit_id=new_id(),
    )


def numbered(audit: AuditEntry, seq: int) -> AuditEntry:
    """A message's audit entry once its number is known."""
    return audit._replace(new_values=audit.new_values | {"seq": seq})
