"""The one clock of the package, so tests can move time without patching the standard library."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
