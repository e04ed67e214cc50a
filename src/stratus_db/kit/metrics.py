"""Per-operation counters and duration histograms (prometheus-client, one private registry per Database)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperationMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._calls = Counter(
            "stratus_db_operations", "Operations run, by name", ["operation"], registry=self.registry
        )
        self._errors = Counter(
            "stratus_db_operation_errors",
            "Operations that raised, by name and error type",
            ["operation", "error"],
            registry=self.registry,
        )
        self._retries = Counter(
            "stratus_db_operation_retries",
            "Transient failures retried, by name",
            ["operation"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "stratus_db_operation_duration_seconds",
            "Wall time of operations, retries included",
            ["operation"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self._children: dict[str, tuple[Counter, Histogram]] = {}

    def observe(self, operation: str, seconds: float, error: BaseException | None = None) -> None:
        children = self._children.get(operation)
        if children is None:
            # Looking a labelled child up costs more than using it; operations are few, so keep them.
            children = self._children[operation] = (
                self._calls.labels(operation),
                self._duration.labels(operation),
            )
        calls, duration = children
        calls.inc()
        duration.observe(seconds)
        if error is not None:
            self._errors.labels(operation, type(error).__name__).inc()

    def retried(self, operation: str) -> None:
        self._retries.labels(operation).inc()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{operation: {count, errors, errors_by_type, retries, duration_ms: {sum, mean, buckets}}}."""
        operations: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return operations.setdefault(
                name,
                {
                    "count": 0,
                    "errors": 0,
                    "errors_by_type": {},
                    "retries": 0,
                    "duration_ms": {"sum": 0.0, "mean": 0.0, "buckets": {}},
                },
            )

        for family in self.registry.collect():
            for sample in family.samples:
                labels = sample.labels
                if "operation" not in labels:
                    continue
                item = entry(labels["operation"])
                if sample.name == "stratus_db_operations_total":
                    item["count"] = int(sample.value)
                elif sample.name == "stratus_db_operation_errors_total":
                    item["errors_by_type"][labels["error"]] = int(sample.value)
                    item["errors"] = sum(item["errors_by_type"].values())
                elif sample.name == "stratus_db_operation_retries_total":
                    item["retries"] = int(sample.value)
                elif sample.name == "stratus_db_operation_duration_seconds_sum":
                    item["duration_ms"]["sum"] = sample.value * 1000
                elif sample.name == "stratus_db_operation_duration_seconds_bucket":
                    bound = labels["le"]
                    key = "+Inf" if bound == "+Inf" else f"{float(bound) * 1000:g}"
                    item["duration_ms"]["buckets"][key] = int(sample.value)
        for item in operations.values():
            if item["count"]:
                item["duration_ms"]["mean"] = item["duration_ms"]["sum"] / item["count"]
        return operations

    def exposition(self) -> bytes:
        """The Prometheus text format, for a /metrics endpoint."""
        return generate_latest(self.registry)
