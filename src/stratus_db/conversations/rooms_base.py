"""What every room of ConversationManager shares: the handle, the audit writer, the search backend, the append
batcher, the recent-messages cache and the background compressions."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stratus_db.audit.manager import AuditManager
from stratus_db.conversations import packing
from stratus_db.conversations.dialect import conversation_dialect_for
from stratus_db.conversations.history import HistoryCompression
from stratus_db.conversations.plans import MESSAGES as MESSAGES
from stratus_db.conversations.recent import RecentMessages
from stratus_db.conversations.schemas import (
    Conversation,
    Message,
)
from stratus_db.errors import NotFoundError
from stratus_db.models import MessageType

if TYPE_CHECKING:
    from stratus_db.database import StratusPostgreSQLIntegration

CONVERSATIONS = "conversations"


def conversation_audit_values(conversation: Conversation) -> dict[str, Any]:
    # Title, context and summary are the user's words: erasure must be able to remove them, so the trail keeps counts.
    return {
        "status": conversation.status.value,
        "message_count": conversation.message_count,
        "total_tokens": conversation.total_tokens,
    }


def message_from_row(
    row: Mapping[str, Any], conversation_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
) -> Message:
    """A stored message as the API returns it: a packed body is unpacked (conversations/packing.py).

    Callers that know the conversation and the owner pass them: the row's copies (driver UUIDs) cost more to convert.
    """
    content = row["content"]
    if content is None:
        content = packing.unpack(row["packed_content"])
    return Message(
        message_id=row["message_id"],
        conversation_id=row["conversation_id"] if conversation_id is None else conversation_id,
        user_id=row["user_id"] if user_id is None else user_id,
        seq=row["seq"],
        agent_name=row["agent_name"],
        message_type=MessageType(row["message_type"]),
        content=content,
        metadata=row["metadata"],
        tokens_used=row["tokens_used"],
        response_time=row["response_time"],
        created_at=row["created_at"],
    )


def not_found(conversation_id: uuid.UUID, user_id: uuid.UUID) -> NotFoundError:
    return NotFoundError(
        f"conversation {conversation_id} does not exist or does not belong to user {user_id}"
    )


class ConversationRoom:
    """What every room of ConversationManager shares: the handle, the audit writer, the search backend, the append
    batcher, the recent-messages cache and the background compressions."""

    def __init__(self, db: StratusPostgreSQLIntegration) -> None:
        self._db = db
        self._audit = AuditManager(db)
        dialect = conversation_dialect_for(db)
        self._search = dialect.search
        self._appends = dialect.appends
        self._history = HistoryCompression.of(db)
        self._recent = db.extension(
            "conversations.recent", lambda: RecentMessages(db.settings.STRATUS_CONTEXT_CACHE_CONVERSATIONS)
        )
