"""Application-generated keys."""

from __future__ import annotations

import uuid

from uuid_utils.compat import uuid7


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so inserts land at the right edge of the primary-key B-tree.

    uuid-utils keeps the ids of one process increasing and their timestamps on the clock (tests/test_ids.py): the
    uuid6 package it replaced added a millisecond per id within a busy millisecond instead, so its timestamps ran
    minutes ahead of the clock after a spell of a few thousand ids a second.
    """
    return uuid7()
