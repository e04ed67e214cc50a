"""Every table. Importing this module registers them all on one metadata (Alembic reads it)."""

from stratus_db.kit.models import Base
from stratus_db.models.analytics import (
    ActivityDailyRow,
    ResponseTimeDailyRow,
    RollupStateRow,
    ServiceSampleRow,
)
from stratus_db.models.api_key import ApiKeyRow
from stratus_db.models.audit import (
    AuditChainRow,
    AuditCheckpointRow,
    AuditRedactionRow,
    AuditRewritePermitRow,
    AuditRow,
)
from stratus_db.models.consent import ConsentAction, ConsentPurpose, ConsentRow
from stratus_db.models.conversation import ConversationRow, ConversationStatus
from stratus_db.models.credential import CredentialRow, ExpiryBasis
from stratus_db.models.memory import MemoryRow, MemoryType
from stratus_db.models.message import MessageRow, MessageType
from stratus_db.models.user import UserRole, UserRow

__all__ = [
    "ActivityDailyRow",
    "ApiKeyRow",
    "AuditChainRow",
    "AuditCheckpointRow",
    "AuditRedactionRow",
    "AuditRewritePermitRow",
    "AuditRow",
    "Base",
    "ConsentAction",
    "ConsentPurpose",
    "ConsentRow",
    "ConversationRow",
    "ConversationStatus",
    "CredentialRow",
    "ExpiryBasis",
    "MemoryRow",
    "MemoryType",
    "MessageRow",
    "MessageType",
    "ResponseTimeDailyRow",
    "RollupStateRow",
    "ServiceSampleRow",
    "UserRole",
    "UserRow",
]
