"""Local days, weeks and months in the metrics' time zone, and their bounds as UTC instants (docs/metrics.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class LocalCalendar:
    zone_name: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.zone_name)

    def day_of(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def start_of(self, day: date) -> datetime:
        """The UTC instant the local day begins (its first instant: midnight, or the first hour a DST change leaves)."""
        return datetime.combine(day, time(), self.zone).astimezone(UTC)

    def bounds(self, first: date, last: date) -> tuple[datetime, datetime]:
        """[start, end) in UTC of the local days from `first` to `last`, both included."""
        return self.start_of(first), self.start_of(last + timedelta(days=1))


def monday_of(day: date) -> date:
    """The Monday of the ISO week of `day`."""
    return day - timedelta(days=day.weekday())


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
