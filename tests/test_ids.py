"""kit/ids.py: keys are UUIDv7s that increase within a process and carry the time they were made."""

from __future__ import annotations

import itertools
import time
import uuid

from stratus_db.kit.ids import new_id


def _milliseconds(value: int) -> int:
    return value >> 80  # the first 48 bits of a UUIDv7: Unix time in milliseconds


def test_a_burst_of_ids_increases_and_stays_on_the_clock() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(100_000)]
    after = time.time_ns() // 1_000_000

    # A stdlib UUID (what asyncpg and SQLAlchemy bind), version 7, strictly increasing (so also all distinct).
    assert all(type(key) is uuid.UUID and key.version == 7 for key in ids[:10] + ids[-10:])
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    # A burst of 100,000 ids takes well under a second; their times must lie within it, not run ahead of the clock.
    assert before <= _milliseconds(ids[0].int) <= _milliseconds(ids[-1].int) <= after
