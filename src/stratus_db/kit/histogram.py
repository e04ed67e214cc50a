"""Percentiles from counts per logarithmic bucket: buckets that add up across days and processes, at a bounded error.

Bucket b holds the durations in [FLOOR_S · GROWTH^b, FLOOR_S · GROWTH^(b+1)); a percentile is reported as the
geometric middle of the bucket where its rank falls, within ±2.5 % of the exact value (GROWTH^½ = 1.0247). Bucket 0
also holds everything below FLOOR_S, and the last bucket everything above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

GROWTH = 1.05
FLOOR_S = 0.001
LAST_BUCKET = 400
"""1 ms · 1.05^400 ≈ 299,000 s (83 hours): past the longest response time a message may carry (86,400 s)."""
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(seconds: float) -> int:
    """The bucket of a duration in seconds. The SQL spellings (kit/sql.py response_time_bucket) compute the same."""
    if seconds <= FLOOR_S:
        return 0
    return min(math.floor(math.log(seconds / FLOOR_S) / _LOG_GROWTH), LAST_BUCKET)


def middle_of(bucket: int) -> float:
    """The value reported for a bucket: its geometric middle, in seconds."""
    return float(FLOOR_S * GROWTH ** (bucket + 0.5))


def percentile(counts: Mapping[int, int], fraction: float) -> float | None:
    """The `fraction` percentile (0.5: the median) of the durations counted per bucket, by nearest rank: the value at
    rank ⌈fraction · n⌉ of the n sorted durations, reported as its bucket's middle. None when nothing was counted."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket in sorted(counts):
        seen += counts[bucket]
        if seen >= rank:
            return middle_of(bucket)
    raise AssertionError("unreachable: the ranks add up to the total")
