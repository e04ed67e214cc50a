"""The report of docs/metrics.md, and the rollup job's outcome. Every figure's definition is in docs/metrics.md."""

from __future__ import annotations

from datetime import date, datetime

from stratus_db.kit.schemas import FrozenModel


class DayFigures(FrozenModel):
    day: date
    active_users: int
    """DAU: users who wrote at least one message that day."""
    conversations: int
    """Conversations started that day (with an agent filter: conversations the agent answered that day)."""
    messages: int
    tokens: int


class AgentFigures(FrozenModel):
    agent_name: str
    responses: int
    tokens: int
    tokens_per_response: float | None
    conversations: int
    """The sum over the days of the conversations the agent answered each day."""
    response_time_mean: float | None
    """Seconds, exact: the mean of the response times its responses carry."""
    response_time_p50: float | None
    """Seconds, from the log-bucket histogram: within 2.5 % of the exact median."""
    response_time_p95: float | None
    per_day: dict[date, int]
    """Responses per day (days without any left out)."""


class RoleFigures(FrozenModel):
    role: str
    conversations: int
    messages: int


class Cohort(FrozenModel):
    week: date
    """The Monday of the week its users signed up."""
    users: int
    retention: list[float | None]
    """For k = 1 … 8: the share of the cohort active in week `week` + k; None for a week not over yet."""


class MonthEngagement(FrozenModel):
    month: date
    """Its first day (the month is clipped to the report's range)."""
    active_users: int
    active_days_per_user: float | None


class MemoryFigures(FrozenModel):
    memories: int
    """Live memories (not expired), now."""
    users: int
    """Users, erased ones left out."""
    memories_per_user: float | None
    per_type: dict[str, int]
    cache_hit_ratio: float | None
    """get_memory lookups answered by the cache ÷ lookups, in the range (service_samples)."""


class OperationQuality(FrozenModel):
    operation: str
    calls: int
    failed: int
    """Failed for a reason of the system's (database unreachable, timeout, unexpected error)."""
    refused: int
    """Refused for the caller's input or rights (validation, not found, permission, conflict, consent)."""
    error_rate: float


class Availability(FrozenModel):
    probes: int
    probes_ok: int
    probe_availability: float | None
    requests: int
    requests_ok: int
    """Answered without a 5xx."""
    request_availability: float | None


class MetricsReport(FrozenModel):
    since: date
    until: date
    time_zone: str
    agent: str | None
    """The agent the figures are filtered to (docs/metrics.md), or None."""
    agents: list[str]
    """Every agent that answered in the range, whatever the filter (the dashboard's choice of agents)."""
    generated_at: datetime
    rolled_through: date | None
    """The last day read from the rollups; the days after it were counted from the messages."""

    # Usage
    daily_active_users: int
    """DAU on `until`."""
    weekly_active_users: int
    """WAU on `until`."""
    monthly_active_users: int
    """MAU on `until`."""
    stickiness: float
    """The mean DAU over the 30 days ending `until` ÷ MAU on `until` (0 without any)."""
    active_users: int
    """Users active on at least one day of the range."""
    conversations: int
    messages: int
    tokens: int
    days: list[DayFigures]
    per_type: dict[str, int]
    per_role: list[RoleFigures]
    messages_per_conversation_mean: float | None
    messages_per_conversation_median: float | None

    # Performance
    per_agent: list[AgentFigures]

    # Quality
    operations: list[OperationQuality]
    availability: Availability

    # Business
    cohorts: list[Cohort]
    engagement: list[MonthEngagement]
    conversations_per_active_user: float | None
    memory: MemoryFigures


class CurrentFigures(FrozenModel):
    """The figures of now, for gauges: today's active users and the last hour's error rate and availability."""

    active_users_today: int
    error_rate: float | None
    """Failed calls ÷ calls of every operation, over the last hour (None without any call)."""
    probe_availability: float | None
    request_availability: float | None


class RollupOutcome(FrozenModel):
    time_zone: str
    rolled_through: date | None
    """The last complete day the rollups now hold (None: no message yet)."""
    days_rolled: int
    rebuilt: bool
    """The rollups of another time zone were dropped and made again."""
    samples_purged: int
    """Service samples older than STRATUS_METRICS_SAMPLE_RETENTION_DAYS, deleted."""
