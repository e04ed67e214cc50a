"""Every table. Importing this module registers them all on one metadata (Alembic reads it)."""

from stratus_db.kit.models import Base
from stratus_db.models.audit import AuditLog
from stratus_db.models.conversation import Conversation, ConversationStatus
from stratus_db.models.memory import MemoryEntry, MemoryType
from stratus_db.models.message import Message, MessageType
from stratus_db.models.user import User, UserRole

__all__ = [
    "AuditLog",
    "Base",
    "Conversation",
    "ConversationStatus",
    "MemoryEntry",
    "MemoryType",
    "Message",
    "MessageType",
    "User",
    "UserRole",
]
