"""The kinds of a person's data that erasure knows by name (a module of its own: the settings import it)."""

from enum import StrEnum


class ErasableKind(StrEnum):
    """A kind of a person's data: a table of rows owned by the user (their `user_id`)."""

    credentials = "user_credentials"
    memories = "memory_entries"
    conversations = "conversations"
    """With their messages (ON DELETE CASCADE)."""
    consents = "user_consents"
    """The consent ledger: the controller must be able to prove a consent was given (LGPD Art. 8 §2)."""
