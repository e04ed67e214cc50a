"""The metrics of docs/metrics.md: usage, performance, quality and business figures over a range of local days,
computed in SQL from the data, daily rollups and the processes' samples."""

from stratus_db.analytics.manager import AnalyticsManager
from stratus_db.analytics.schemas import MetricsReport, RollupOutcome

__all__ = ["AnalyticsManager", "MetricsReport", "RollupOutcome"]
