"""What the metrics of docs/metrics.md are computed from, beside the data itself: the daily rollups of the messages
(analytics/sources.py) and the per-minute counts every process keeps of its calls, requests and probes
(kit/samples.py)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Float, ForeignKey, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from stratus_db.kit.models import Base
from stratus_db.kit.types import UTCDateTime


class ActivityDailyRow(Base):
    """One local day of one user's messages of one type and agent (`''` for none): a complete day, rolled up once."""

    __tablename__ = "activity_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True
    )
    agent_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    message_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    messages: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(BigInteger)
    conversations: Mapped[int] = mapped_column(Integer)
    """Distinct conversations of these messages (a conversation is one user's: they add up across users)."""
    timed: Mapped[int] = mapped_column(Integer)
    """Messages with a response time."""
    time_total: Mapped[float] = mapped_column(Float)
    """The sum of their response times, in seconds."""

    # Erasure deletes a user's rows by user_id (privacy/erasure.py owned_tables).
    __table_args__ = (Index(None, "user_id"),)


class ResponseTimeDailyRow(Base):
    """How many of an agent's responses of a local day took a time within one logarithmic bucket (kit/histogram.py)."""

    __tablename__ = "response_time_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    agent_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    bucket: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    responses: Mapped[int] = mapped_column(Integer)


class RollupStateRow(Base):
    """How far the rollups go, and in which time zone their days are."""

    __tablename__ = "rollup_state"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    time_zone: Mapped[str] = mapped_column(String(64))
    rolled_through: Mapped[date] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ServiceSampleRow(Base):
    """One process's counts of one minute: calls of a library operation, requests of a route, readiness probes, memory
    cache lookups (`kind`, `name`): how many, how many failed for a reason of the system's, how many the caller's
    input or rights refused."""

    __tablename__ = "service_samples"

    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    instance: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    total: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    refused: Mapped[int] = mapped_column(Integer)
