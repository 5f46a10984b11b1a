"""Prometheus metrics for the controller, in a registry of their own.

Each controller instance owns a ``Metrics`` (no module-level globals), so tests and the
simulator can run several side by side. Labels are bounded: groups, revisions, cells,
policies, zones and reaper kinds, never a node or a pod.

``molt_remediation_paused`` has a series only per zone of a policy with a remediation
chain (``set_remediation_paused``); ``molt_watchdog_state`` only per Watchdog
(``set_watchdog_state``). Without either, they export only their ``# HELP`` and
``# TYPE`` lines.
``molt_history_rows_dropped_total`` and ``molt_history_rows_buffered`` belong to the
history store, which sets them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from molt.api.terminationpolicy import ALL_REASONS
from molt.policy.watchdog import STATES
from molt.ports import EvictionOutcome

HOUR = 3600.0
NODE_AGE_BUCKETS = tuple(h * HOUR for h in (1, 3, 6, 12, 24, 36, 42, 48, 54, 60, 72, 96, 120, 168))
"""Node ages up to seven days, finest around the 48 h default maximum."""
HOST_INIT_BUCKETS = (5.0, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800)
# client-go's workqueue buckets: 10 ns to 10 s, by factors of ten.
WORKQUEUE_BUCKETS = tuple(10.0 ** (exponent - 8) for exponent in range(10))

LabelValues = tuple[str, ...]


class QueueMetrics:
    """The hook a ``WorkQueue`` reports to, under controller-runtime's metric names.

    Structurally matches ``molt.controllers.workqueue.QueueHook``; the queue knows nothing
    of Prometheus.
    """

    def __init__(self, metrics: Metrics, name: str) -> None:
        self._adds = metrics.workqueue_adds.labels(name=name)
        self._retries = metrics.workqueue_retries.labels(name=name)
        self._queued = metrics.workqueue_queue_duration.labels(name=name)
        self._worked = metrics.workqueue_work_duration.labels(name=name)
        self._depth = metrics.workqueue_depth.labels(name=name)
        self._unfinished = metrics.workqueue_unfinished_work.labels(name=name)
        self._longest = metrics.workqueue_longest_running.labels(name=name)

    def added(self) -> None:
        self._adds.inc()

    def retried(self) -> None:
        self._retries.inc()

    def waited(self, seconds: float) -> None:
        self._queued.observe(max(0.0, seconds))

    def worked(self, seconds: float) -> None:
        self._worked.observe(max(0.0, seconds))

    def watch(self, depth: Callable[[], int], in_progress: Callable[[], Iterable[float]]) -> None:
        """Read the depth and the running keys' durations (seconds) at each scrape."""
        self._depth.set_function(lambda: float(depth()))
        self._unfinished.set_function(lambda: float(sum(in_progress())))
        self._longest.set_function(lambda: float(max(in_progress(), default=0.0)))


class SeriesSet:
    """A labelled gauge whose series are replaced as a whole per owner (e.g. one group),
    so series of revisions, cells or policies that went away are removed, not frozen."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._owned: dict[Hashable, set[LabelValues]] = {}

    def replace(self, owner: Hashable, values: dict[LabelValues, float]) -> None:
        for labels in self._owned.get(owner, set()) - values.keys():
            self.gauge.remove(*labels)
        for labels, value in values.items():
            self.gauge.labels(*labels).set(value)
        self._owned[owner] = set(values)

    def drop(self, owner: Hashable) -> None:
        self.replace(owner, {})
        self._owned.pop(owner, None)


class Metrics:
    """Every metric ``molt run`` exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Termination pipeline.
        self.decisions = Counter(
            "molt_decisions_total",
            "Nodes selected for termination, by rule.",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge(
            "molt_nodes_in_flight",
            "Nodes in the termination pipeline, by policy.",
            ["policy"],
            registry=r,
        )
        self.drain_duration = Histogram(
            "molt_drain_duration_seconds",
            "Time from the start of a drain to an empty node.",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=r,
        )
        self.evictions = Counter(
            "molt_evictions_total", "Eviction API answers, by outcome.", ["outcome"], registry=r
        )
        self.completed = Counter(
            "molt_nodes_terminated_total",
            "Nodes that finished the pipeline, by policy.",
            ["policy"],
            registry=r,
        )
        self.drain_blocked_longest = Gauge(
            "molt_drain_blocked_longest_seconds",
            "How long the policy's longest-blocked node has been reported blocked "
            '(molt.dev/blocked) as seen by this process; 0 when none is. policy="(none)" for '
            "nodes a group's rollout selected.",
            ["policy"],
            registry=r,
        )
        self.past_max_age = Gauge(
            "molt_nodes_past_max_age",
            "Live nodes older than their effective maximum age (the smaller of the policy's "
            'maxAge and the group\'s maxNodeAge), by covering policy; policy="(none)" for '
            "nodes no policy covers, past their group's maxNodeAge.",
            ["policy"],
            registry=r,
        )
        # Node ages.
        self.node_age = Histogram(
            "molt_node_age_seconds",
            "Ages of live nodes, every node observed once per resync, by instance group "
            '(group="(none)" for nodes outside any group).',
            ["group"],
            buckets=NODE_AGE_BUCKETS,
            registry=r,
        )
        self.oldest_node_age = Gauge(
            "molt_node_oldest_age_seconds",
            "Age of the oldest live node, by instance group.",
            ["group"],
            registry=r,
        )
        # Instance groups.
        self.group_nodes = Gauge(
            "molt_group_nodes",
            "Nodes of an instance group per revision and cell (zone/capacity-type): "
            "state=desired is the cell's desired size, state=ready its Ready nodes.",
            ["group", "revision", "cell", "state"],
            registry=r,
        )
        self.launches = Counter(
            "molt_launches_total",
            "Instances launched, as first observed in a cell.",
            ["group", "cell"],
            registry=r,
        )
        self.launch_failures = Counter(
            "molt_launch_failures_total",
            "Failed launches: provider errors (capacity included), instances not Ready within "
            "readyTimeout, young nodes NotReady past notReadyFor.",
            ["group", "cell"],
            registry=r,
        )
        self.rollbacks = Counter(
            "molt_rollbacks_total",
            "Revisions degraded with capacity returned to the previous revision.",
            ["group"],
            registry=r,
        )
        self.routed_nodes = Gauge(
            "molt_routed_nodes",
            "Nodes of a cell's share moved to other cells because the cell rests "
            "(out of capacity or unhealthy).",
            ["group", "cell"],
            registry=r,
        )
        self.revision_degraded = Gauge(
            "molt_revision_degraded",
            "1 while the revision is Degraded, else 0.",
            ["group", "revision"],
            registry=r,
        )
        self.host_init = Histogram(
            "molt_host_init_seconds",
            "Time from an instance's launch to its Node turning Ready, for instances "
            "launched while this process ran.",
            ["group", "revision"],
            buckets=HOST_INIT_BUCKETS,
            registry=r,
        )
        # Reapers.
        self.reaped = Counter(
            "molt_reaped_total",
            "Objects reapers deleted, by kind (stuckPods, finishedPods, ghostNodes); "
            'dry_run="true" counts those a dry-run Reaper only reported.',
            ["kind", "dry_run"],
            registry=r,
        )
        # Remediation and watchdogs: series only for policies with a chain, and Watchdogs.
        self.remediation_paused = Gauge(
            "molt_remediation_paused",
            "1 while remediation is paused in a zone of a group (maxUnhealthy of the zone, "
            "or of the whole group, exceeded), 0 where it runs; per policy with remediation.",
            ["policy", "group", "zone"],
            registry=r,
        )
        self.watchdog_state = Gauge(
            "molt_watchdog_state",
            "1 for the watchdog's current state (Healthy, WarmingUp, Failing, Snoozed), "
            "0 for the others.",
            ["watchdog", "state"],
            registry=r,
        )
        # History store.
        self.history_dropped = Counter(
            "molt_history_rows_dropped_total",
            "History rows dropped because the store could not keep up or was unreachable.",
            registry=r,
        )
        self.history_buffered = Gauge(
            "molt_history_rows_buffered", "History rows waiting to be written.", registry=r
        )
        # Process.
        self.api_requests = Gauge(
            "molt_api_requests",
            "Requests this process has sent to the API server, by verb.",
            ["verb"],
            registry=r,
        )
        self.leader = Gauge("molt_leader", "1 while this replica holds the Lease.", registry=r)
        # Work queues, with controller-runtime's (client-go's) names.
        self.workqueue_depth = Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=r
        )
        self.workqueue_adds = Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            ["name"],
            registry=r,
        )
        self.workqueue_queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"],
            buckets=WORKQUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            ["name"],
            buckets=WORKQUEUE_BUCKETS,
            registry=r,
        )
        self.workqueue_retries = Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            ["name"],
            registry=r,
        )
        self.workqueue_unfinished_work = Gauge(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been "
            "observed by work_duration. Large values indicate stuck threads.",
            ["name"],
            registry=r,
        )
        self.workqueue_longest_running = Gauge(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running.",
            ["name"],
            registry=r,
        )
        # Counters of a known, small label set start at 0, so rate() and increase() see the
        # first event rather than a series appearing.
        for reason in ALL_REASONS:
            self.decisions.labels(reason=reason)
        for outcome in EvictionOutcome:
            self.evictions.labels(outcome=outcome.value)
        # Series replaced per owner, so the ones that went away disappear.
        self.group_nodes_series = SeriesSet(self.group_nodes)
        self.routed_series = SeriesSet(self.routed_nodes)
        self.degraded_series = SeriesSet(self.revision_degraded)
        self.policy_series = SeriesSet(self.past_max_age)
        self.blocked_series = SeriesSet(self.drain_blocked_longest)
        self.oldest_series = SeriesSet(self.oldest_node_age)
        self.watchdog_series = SeriesSet(self.watchdog_state)
        self.remediation_series = SeriesSet(self.remediation_paused)

    def set_remediation_paused(self, policy: str, zones: dict[tuple[str, str], bool]) -> None:
        """``molt_remediation_paused``: per (group, zone) the policy covers, 1 where
        remediation is paused (a group-wide pause sets each of its zones); an empty map
        drops the policy's series."""
        if not zones:
            self.remediation_series.drop(policy)
            return
        self.remediation_series.replace(
            policy,
            {
                (policy, group, zone): 1.0 if paused else 0.0
                for (group, zone), paused in zones.items()
            },
        )

    def set_watchdog_state(self, watchdog: str, state: str | None) -> None:
        """``molt_watchdog_state``: 1 for ``state``, 0 for the others; None drops the series."""
        if state is None:
            self.watchdog_series.drop(watchdog)
            return
        self.watchdog_series.replace(
            watchdog, {(watchdog, s): 1.0 if s == state else 0.0 for s in STATES}
        )

    def workqueue(self, name: str) -> QueueMetrics:
        """The hook for the work queue called ``name`` (the ``name`` label)."""
        return QueueMetrics(self, name)
