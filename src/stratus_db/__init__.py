"""stratus_db: the database layer of Stratus.IA (users, memories, conversations, consent, audit)."""

from stratus_db.analytics import AnalyticsManager, MetricsReport, RollupOutcome
from stratus_db.audit.manager import AuditManager
from stratus_db.audit.schemas import AuditAction, AuditEvent
from stratus_db.config import Settings, load_settings
from stratus_db.conversations.manager import ConversationManager
from stratus_db.conversations.schemas import (
    CompressionResult,
    ContextWindow,
    Conversation,
    ConversationStats,
    ImportResult,
    Message,
    SearchHit,
    UsageStats,
)
from stratus_db.conversations.summarizer import (
    ChatModelSummarizer,
    ExtractiveSummarizer,
    OpenAISummarizer,
    Summarizer,
)
from stratus_db.database import Database, HealthStatus, StratusPostgreSQLIntegration
from stratus_db.errors import (
    ConfigurationError,
    ConflictError,
    ConsentRequiredError,
    DatabaseClosedError,
    DatabaseError,
    DatabaseUnavailableError,
    DecryptionError,
    NotFoundError,
    PermissionDeniedError,
    SchemaNotReadyError,
    StoredDataError,
    StratusError,
    SummarizerUnavailableError,
    TransientDatabaseError,
    UnexpectedError,
    ValidationError,
    Violation,
)
from stratus_db.kit.schemas import Page
from stratus_db.memory.manager import MemoryManager
from stratus_db.memory.schemas import MemoryEntry, SearchResult
from stratus_db.models import (
    ConsentAction,
    ConsentPurpose,
    ConversationStatus,
    MemoryType,
    MessageType,
    UserRole,
)
from stratus_db.privacy.consent import ConsentManager
from stratus_db.privacy.consent_schemas import ConsentEvent, ConsentState
from stratus_db.privacy.manager import PrivacyManager
from stratus_db.security.api_keys import ApiKey, ApiKeyManager, NewApiKey
from stratus_db.security.principal import Principal, PrincipalKind
from stratus_db.security.rotation import KeyManager, RotationReport
from stratus_db.users.manager import UserManager
from stratus_db.users.schemas import UserRead

__all__ = [
    "AnalyticsManager",
    "ApiKey",
    "ApiKeyManager",
    "AuditAction",
    "AuditEvent",
    "AuditManager",
    "ChatModelSummarizer",
    "CompressionResult",
    "ConfigurationError",
    "ConflictError",
    "ConsentAction",
    "ConsentEvent",
    "ConsentManager",
    "ConsentPurpose",
    "ConsentRequiredError",
    "ConsentState",
    "ContextWindow",
    "Conversation",
    "ConversationManager",
    "ConversationStats",
    "ConversationStatus",
    "Database",
    "DatabaseClosedError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "DecryptionError",
    "ExtractiveSummarizer",
    "HealthStatus",
    "ImportResult",
    "KeyManager",
    "MemoryEntry",
    "MemoryManager",
    "MemoryType",
    "Message",
    "MessageType",
    "MetricsReport",
    "NewApiKey",
    "NotFoundError",
    "OpenAISummarizer",
    "Page",
    "PermissionDeniedError",
    "Principal",
    "PrincipalKind",
    "PrivacyManager",
    "RollupOutcome",
    "RotationReport",
    "SchemaNotReadyError",
    "SearchHit",
    "SearchResult",
    "Settings",
    "StoredDataError",
    "StratusError",
    "StratusPostgreSQLIntegration",
    "Summarizer",
    "SummarizerUnavailableError",
    "TransientDatabaseError",
    "UnexpectedError",
    "UsageStats",
    "UserManager",
    "UserRead",
    "UserRole",
    "ValidationError",
    "Violation",
    "load_settings",
]
