"""Application-generated keys."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so inserts land at the right edge of the primary-key B-tree."""
    return uuid.UUID(bytes=uuid6.uuid7().bytes)
