"""stratus_db: the database layer of Stratus.IA (users, memories, conversations, audit)."""

from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction, AuditEvent
from stratus_db.config import Settings, load_settings
from stratus_db.conversations.manager import ConversationManager
from stratus_db.conversations.schemas import Conversation, Message
from stratus_db.database import Database, HealthStatus, StratusPostgreSQLIntegration
from stratus_db.errors import (
    ConfigurationError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    NotFoundError,
    SchemaNotReadyError,
    StratusError,
    TransientDatabaseError,
    ValidationError,
)
from stratus_db.kit.schemas import Page
from stratus_db.memory.manager import MemoryManager
from stratus_db.memory.schemas import MemoryEntry, SearchResult
from stratus_db.models import ConversationStatus, MemoryType, MessageType, UserRole
from stratus_db.security.principal import Principal, PrincipalKind
from stratus_db.users.manager import UserManager
from stratus_db.users.schemas import UserRead

__all__ = [
    "AuditAction",
    "AuditEvent",
    "AuditManager",
    "ConfigurationError",
    "ConflictError",
    "Conversation",
    "ConversationManager",
    "ConversationStatus",
    "Database",
    "DatabaseError",
    "DatabaseUnavailableError",
    "HealthStatus",
    "MemoryEntry",
    "MemoryManager",
    "MemoryType",
    "Message",
    "MessageType",
    "NotFoundError",
    "Page",
    "Principal",
    "PrincipalKind",
    "SchemaNotReadyError",
    "SearchResult",
    "Settings",
    "StratusError",
    "StratusPostgreSQLIntegration",
    "TransientDatabaseError",
    "UserManager",
    "UserRead",
    "UserRole",
    "ValidationError",
    "load_settings",
]
