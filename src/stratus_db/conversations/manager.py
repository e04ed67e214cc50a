"""ConversationManager: conversations with the agents and their append-only messages."""

from __future__ import annotations

from stratus_db.conversations.appends import MessageAppends
from stratus_db.conversations.reads import ConversationReads


class ConversationManager(MessageAppends, ConversationReads):
    """Conversations and their messages: lifecycle, appends, reads and the context window. Every change is audited.

    Its rooms, one file each: conversations/lifecycle.py (create, update, archive, delete, restore, purge),
    compression.py (history folded into summaries), appends.py (add_message, add_messages, import_messages),
    reads.py (messages, the context window, search, statistics); rooms_base.py holds what they share.

    Every public method takes a keyword-only `principal`: who makes that call. Given, it is the call's principal,
    over the context's (`db.context(principal=...)`) if that names another: security/policy.py decides the call for
    it, and its audit rows record it as the actor. Omitted, the context's principal applies, and without one the
    STRATUS_ANONYMOUS_CALLS setting. A call refused raises PermissionDeniedError and writes only the refusal's audit
    row; a `principal` that is not a Principal raises ValidationError. docs/users.md, "Access control", has the rules.
    """


__all__ = ["ConversationManager"]
