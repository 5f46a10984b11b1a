"""Prometheus metrics for the controller, in a registry of their own.

Each controller instance owns a ``Metrics`` (no module-level globals), so tests and the
simulator can run several side by side.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Decisions by reason, nodes in flight, drain duration, evictions by outcome."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "molt_decisions_total",
            "Nodes selected for termination, by rule.",
            ["reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "molt_nodes_in_flight",
            "Nodes in the termination pipeline, by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.drain_duration = Histogram(
            "molt_drain_duration_seconds",
            "Time from the start of a drain to an empty node.",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=self.registry,
        )
        self.evictions = Counter(
            "molt_evictions_total",
            "Eviction API answers, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.completed = Counter(
            "molt_nodes_terminated_total",
            "Nodes that finished the pipeline, by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.api_requests = Gauge(
            "molt_api_requests",
            "Requests this process has sent to the API server, by verb.",
            ["verb"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "molt_leader", "1 while this replica holds the Lease.", registry=self.registry
        )
        self.history_dropped = Counter(
            "molt_history_rows_dropped_total",
            "History rows dropped because the buffer was full (the store was down or slow).",
            registry=self.registry,
        )
        self.history_buffered = Gauge(
            "molt_history_rows_buffered",
            "History rows waiting in memory to be written to the store.",
            registry=self.registry,
        )
