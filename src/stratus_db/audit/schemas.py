from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from stratus_db.kit.schemas import FrozenModel


class AuditAction(StrEnum):
    create = "create"
    update = "update"
    delete = "delete"
    promote = "promote"
    """A memory moved to a longer-lived tier because it keeps being used."""
    evict = "evict"
    """A memory removed to keep its user under the per-user cap."""
    purge = "purge"
    """Rows deleted for good: expired memories (one row per user per batch, listing the ids), a conversation."""
    archive = "archive"
    restore = "restore"
    """An archived or deleted conversation made active again."""
    summarize = "summarize"
    """compress_history folded older messages into the conversation's summary."""
    import_ = "import"
    """import_messages: one row per imported batch."""
    read = "read"
    """Medical-certificate data was read (credential_status, expiring_credentials): which credentials, never their
    values."""
    export = "export"
    """Everything held about a person was exported (privacy/export.py): the format, not the content."""
    erase = "erase"
    """Everything held about a person was erased (privacy/erasure.py): under the pseudonym, with counts only."""
    grant = "grant"
    """A user granted consent to a purpose (a new row of the consent ledger, user_consents)."""
    revoke = "revoke"
    """A user revoked consent to a purpose (a new row of the consent ledger; the grant's row is unchanged)."""
    deny = "deny"
    """A call the access rules refused (security/policy.py): who, which operation, on whose data."""


class AuditEvent(FrozenModel):
    """One row of the audit trail."""

    audit_id: uuid.UUID
    user_id: uuid.UUID | None
    action: str
    table_name: str
    record_id: uuid.UUID | None
    old_values: Any  # a JSON object, or None
    new_values: Any  # a JSON object, or None
    timestamp: datetime
    ip_address: str | None
    user_agent: str | None
    actor: str
    trace_id: str | None
    purpose: str | None
    on_behalf_of: uuid.UUID | None = None
    """The user an agent acted for (None for any other principal)."""
