"""Application-generated keys."""

from __future__ import annotations

import uuid

from uuid_utils.compat import uuid7


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so inserts land at the right edge of the primary-key B-tree.

    uuid-utils keeps the ids of one process increasing with a counter within a millisecond and its timestamp on the
    clock (RFC 9562, method 1): the uuid6 package it replaced added a millisecond per id instead, which ran minutes
    ahead of the clock after a busy spell of a few thousand ids a second.
    """
    return uuid7()
