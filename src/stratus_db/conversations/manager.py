"""ConversationManager: conversations with the agents and their append-only messages."""

from __future__ import annotations

from stratus_db.conversations.appends import MessageAppends
from stratus_db.conversations.reads import ConversationReads


class ConversationManager(MessageAppends, ConversationReads):
    """Conversations and their messages: lifecycle, appends, reads and the context window. Every change is audited.

    Its rooms, one file each: conversations/lifecycle.py (create, update, archive, delete, restore, purge),
    compression.py (history folded into summaries), appends.py (add_message, add_messages, import_messages),
    reads.py (messages, the context window, search, statistics); rooms_base.py holds what they share.
    """


__all__ = ["ConversationManager"]
