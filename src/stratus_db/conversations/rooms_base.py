"""What every room of ConversationManager shares: the handle, the audit writer, the search backend, the append
batcher, the recent-messages cache and the background compressions."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from stratus_db.audit.manager import AuditManager
from stratus_db.conversations import packing
from stratus_db.conversations.dialect import conversation_dialect_for
from stratus_db.conversations.history import HistoryCompression
from stratus_db.conversations.plans import MESSAGES as MESSAGES
from stratus_db.conversations.recent import RecentMessages
from stratus_db.conversations.repository import StoredMessage
from stratus_db.conversations.schemas import (
    Conversation,
    Message,
)
from stratus_db.errors import NotFoundError
from stratus_db.models import MessageType
from stratus_db.privacy.gate import ConsentCheck
from stratus_db.users.activity import tracker_of

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


def message_of(stored: StoredMessage) -> Message:
    """A stored message as the API returns it: a packed body is unpacked (conversations/packing.py)."""
    content = stored.content
    if content is None:
        assert stored.packed_content is not None, "ck_messages_one_body: one of the two holds the body"
        content = packing.unpack(stored.packed_content)
    return Message(
        message_id=stored.message_id,
        conversation_id=stored.conversation_id,
        user_id=stored.user_id,
        seq=stored.seq,
        agent_name=stored.agent_name,
        message_type=MessageType(stored.message_type),
        content=content,
        metadata=stored.metadata,
        tokens_used=stored.tokens_used,
        response_time=stored.response_time,
        created_at=stored.created_at,
    )


def recent_messages(db: StratusPostgreSQLIntegration) -> RecentMessages:
    """The handle's one cache of conversation tails (conversations/recent.py)."""
    return db.extension(
        "conversations.recent", lambda: RecentMessages(db.settings.STRATUS_CONTEXT_CACHE_CONVERSATIONS)
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
        self._consent = ConsentCheck(db)
        """The consent checks (privacy/gate.py): compression with a summarizer that sends text out needs consent."""
        self._activity = tracker_of(db)
        """Where a user's activity is noted: `users.last_active`, written at most once a minute (users/activity.py)."""
        self._recent = recent_messages(db)
