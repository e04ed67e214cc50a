"""One error hierarchy for the whole package.

Every public function raises only these. Each carries the HTTP status the API layer renders, and a message that says
what was wrong and what is accepted.
"""

from __future__ import annotations

from enum import StrEnum


class StratusError(Exception):
    """Base of every error raised by stratus_db."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(StratusError):
    """An argument was malformed or out of range; nothing was written."""

    status_code = 422


class NotFoundError(StratusError):
    """The user, conversation or memory named does not exist (or is not visible to the caller)."""

    status_code = 404


class PermissionDeniedError(StratusError):
    """The call's principal (its `principal=` argument, else the context's) may not make this call on this data
    (security/policy.py); nothing was written but the audit row of the refusal."""

    status_code = 403


class ConsentRequiredError(StratusError):
    """The user has not consented to the purpose this call needs (the consent ledger, privacy/consent.py): an external
    summarizer would receive their messages, or memories would personalise their answers. Nothing was sent or
    written; `ConsentManager.grant_consent` records the user's consent."""

    status_code = 403

    def __init__(self, message: str, *, purpose: str, user_id: str) -> None:
        super().__init__(message)
        self.purpose = purpose
        """The purpose without consent (a ConsentPurpose value)."""
        self.user_id = user_id
        """The user whose consent is missing."""


class Violation(StrEnum):
    """The kind of database rule a write broke."""

    unique = "unique"
    foreign_key = "foreign_key"
    check = "check"
    not_null = "not_null"
    other = "other"


class ConflictError(StratusError):
    """The write would break a uniqueness rule or the record is in a state that forbids it."""

    status_code = 409

    def __init__(
        self, message: str, *, violation: Violation | None = None, constraint: str | None = None
    ) -> None:
        super().__init__(message)
        self.violation = violation
        """The database rule the write broke (SQLSTATE class 23); None when a domain check refused it."""
        self.constraint = constraint
        """The constraint's name on PostgreSQL; on SQLite the columns or the CHECK expression it reports."""


class ConfigurationError(StratusError):
    """A setting (an environment variable) is missing or malformed."""

    status_code = 500


class DatabaseUnavailableError(StratusError):
    """The database server cannot be reached, or stayed unavailable after the retries."""

    status_code = 503

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        """True when repeating the operation is safe and may succeed."""


class TransientDatabaseError(DatabaseUnavailableError):
    """The database rolled the transaction back (serialization failure, deadlock, busy lock, a concurrent insert of
    the same key): nothing was written and retrying may succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class SchemaNotReadyError(DatabaseUnavailableError):
    """The database schema is not at the revision this code expects: run `stratus-db migrate`."""


class DatabaseError(StratusError):
    """The database refused an operation for a reason that is not the caller's input."""

    status_code = 500


class DatabaseClosedError(StratusError):
    """The handle was closed (`close()`): it opens no new connection. Make a new handle to go on."""

    status_code = 503


class UnexpectedError(StratusError):
    """A failure stratus_db has no better name for: a defect. The log has its traceback under the call's trace id."""

    status_code = 500


class StoredDataError(DatabaseError):
    """A stored value cannot be decoded: its bytes are corrupt, or it was written by a newer version (a compression
    dictionary this version does not ship). Retrying will not help; the row needs attention."""


class DecryptionError(StoredDataError):
    """An encrypted value cannot be read: it was altered, it was moved from the table, column or row it was
    encrypted for, it names a key the configured keyring does not hold, or the user's data key it needs was not
    given (or was destroyed by an erasure). Retrying will not help. The message names the key id and the cell, never
    the value or the key (security/crypto.py)."""


class SummarizerUnavailableError(StratusError):
    """The summarization service failed (unreachable, too slow, rate-limited, or it refused the request); nothing
    was summarized."""

    status_code = 503
    retryable: bool
    """True when the same request may succeed later (timeout, rate limit, server error)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
