"""The newest messages of recently read conversations, kept per process for get_context.

A stored message never changes (packing changes how its body is stored, not what it says) and sequence numbers have
no gaps and become visible in order (each is handed out under the conversation's row lock, held until commit). So a
cached tail can never be stale: the next read fetches the conversation's head and only the messages numbered after
the tail, and checks that they join it. Nothing needs invalidating across processes; a purged conversation is
simply not found. Only reads outside a caller's transaction use it (one inside could see rows that roll back).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass

from stratus_db.conversations.schemas import Message


@dataclass(frozen=True)
class Tail:
    user_id: uuid.UUID
    messages: tuple[Message, ...]
    """Contiguous, oldest first; the last one is number `last_seq` (if any)."""
    last_seq: int
    """The conversation's message count when the tail was read."""


class RecentMessages:
    """An LRU of conversation tails, bounded by the number of conversations."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._tails: OrderedDict[uuid.UUID, Tail] = OrderedDict()

    def get(self, conversation_id: uuid.UUID, user_id: uuid.UUID) -> Tail | None:
        tail = self._tails.get(conversation_id)
        if tail is None or tail.user_id != user_id:
            return None
        self._tails.move_to_end(conversation_id)
        return tail

    def put(self, conversation_id: uuid.UUID, tail: Tail) -> None:
        if self.capacity == 0:
            return
        self._tails[conversation_id] = tail
        self._tails.move_to_end(conversation_id)
        while len(self._tails) > self.capacity:
            self._tails.popitem(last=False)

    def drop(self, conversation_id: uuid.UUID) -> None:
        self._tails.pop(conversation_id, None)

    def drop_user(self, user_id: uuid.UUID) -> None:
        """Forget every tail of the user's (their erasure: a purged conversation is never served again, but its
        messages should not stay in this process's memory either)."""
        for conversation_id in [key for key, tail in self._tails.items() if tail.user_id == user_id]:
            del self._tails[conversation_id]
