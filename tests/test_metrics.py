"""kit/metrics.py: the calls counter and duration histogram it keeps itself read exactly as prometheus-client's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stratus_db.kit.metrics import DURATION_BUCKETS_S, OperationMetrics

# On a bound, just past it, past the last bound, and zero.
DURATIONS = {"memory.get": [0.0005, 0.00051, 0.0004, 0.0, 3.0], "user.create": [10.0, 10.5, 0.02]}


def _samples(exposition: bytes, families: set[str]) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(exposition.decode())
        if family.name in families
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_calls_and_durations_read_as_prometheus_clients_own_counter_and_histogram() -> None:
    metrics = OperationMetrics()
    registry = CollectorRegistry()
    calls = Counter("stratus_db_operations", "Operations run, by name", ["operation"], registry=registry)
    duration = Histogram(
        "stratus_db_operation_duration_seconds",
        "Wall time of operations, retries included",
        ["operation"],
        buckets=DURATION_BUCKETS_S,
        registry=registry,
    )
    for operation, seconds_list in DURATIONS.items():
        for seconds in seconds_list:
            metrics.observe(operation, seconds)
            calls.labels(operation).inc()
            duration.labels(operation).observe(seconds)
    families = {"stratus_db_operations", "stratus_db_operation_duration_seconds"}
    assert _samples(metrics.exposition(), families) == _samples(generate_latest(registry), families)
    assert metrics.snapshot()["memory.get"]["duration_ms"]["buckets"]["0.5"] == 3
    assert metrics.snapshot()["user.create"]["duration_ms"]["buckets"]["10000"] == 2
    assert metrics.snapshot()["user.create"]["count"] == 3
