"""The metrics' logic: nodes past their maximum age, routed shares, group series from the
status, launches counted once, the longest-blocked drain, stale series removed, and the
work queue's client-go measurements."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import generate_latest

from molt.api import InstanceGroup
from molt.api.instancegroup import Capacity
from molt.api.labels import BLOCKED_ANNOTATION, POLICY_ANNOTATION
from molt.controllers.instancegroup.gauges import GroupMetrics, routed_share
from molt.controllers.instancegroup.reconciler import CellReconciler
from molt.controllers.termination.selection import SelectionReconciler
from molt.controllers.workqueue import WorkQueue
from molt.observe.metrics import Metrics
from molt.policy.cells import CellKey
from molt.policy.fleet_age import NO_GROUP, NO_POLICY, fleet_ages
from molt.policy.snapshot import GroupView, NodeCondition
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider
from tests.support.fleet import NOW, node, policy
from tests.support.promql import exposition_names, metric_names

pytestmark = pytest.mark.unit

HOUR = 3600.0


def value(metrics: Metrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


# Fleet age.


def test_a_node_is_past_max_age_by_the_smaller_of_its_policy_and_group_limits() -> None:
    nodes = [
        node("young", age_hours=10),
        node("past-group-limit", age_hours=30),  # group says 24h, policy 48h
        node("past-both", age_hours=50),
        node("outside", age_hours=60, group=None),  # no group: the policy's 48h only
    ]
    groups = {"workers": GroupView("workers", max_node_age_seconds=24 * HOUR)}
    ages = fleet_ages(nodes, [policy("rotate", rules={"maxAge": "48h"})], groups, NOW)
    assert ages.past_max_age == {"rotate": 3}
    assert ages.oldest == {"workers": 50 * HOUR, NO_GROUP: 60 * HOUR}
    assert sorted(ages.ages["workers"]) == [10 * HOUR, 30 * HOUR, 50 * HOUR]


def test_nodes_no_policy_covers_count_under_none_by_their_group_limit() -> None:
    picky = policy("picky", nodeSelector={"matchLabels": {"team": "data"}})
    nodes = [
        node("covered", age_hours=50, labels={"team": "data"}),
        node("uncovered-old", age_hours=50),
        node("uncovered-young", age_hours=5),
        node("no-limit", age_hours=500, group="unlimited"),
    ]
    groups = {"workers": GroupView("workers", max_node_age_seconds=48 * HOUR)}
    ages = fleet_ages(nodes, [picky], groups, NOW)
    assert ages.past_max_age == {"picky": 1, NO_POLICY: 1}


def test_every_policy_reports_zero_and_malformed_launch_times_are_left_out() -> None:
    bad = node("bad", launched_annotation=False, annotations={"molt.dev/launched-at": "soon"})
    ages = fleet_ages([bad, node("fine", age_hours=1)], [policy("a"), policy("b")], {}, NOW)
    assert ages.past_max_age == {"a": 0, "b": 0}
    assert ages.ages == {"workers": [HOUR]}


# Routing.


def test_routing_reports_the_share_a_resting_cell_gave_away() -> None:
    capacity = Capacity()
    zones = ["zone-a", "zone-b", "zone-c"]
    rest = frozenset({CellKey("zone-b", "on-demand")})
    routed = routed_share(6, zones, capacity, rest)
    assert routed == {
        CellKey("zone-a", "on-demand"): 0,
        CellKey("zone-b", "on-demand"): 2,
        CellKey("zone-c", "on-demand"): 0,
    }
    assert set(routed_share(6, zones, capacity, frozenset()).values()) == {0}


# The group controller.


def _group(**spec: object) -> InstanceGroup:
    spec.setdefault("health", {"readyTimeout": "1m", "window": "30m", "capacityCooldown": "3m"})
    spec.setdefault("zones", ["zone-a", "zone-b"])
    return InstanceGroup.model_validate(instance_group("workers", replicas=4, **spec))


async def test_the_group_controller_reports_cells_launches_host_init_and_routing() -> None:
    cluster = FakeCluster(groups=[_group()])
    clock = FakeClock(NOW)
    provider = FakeProvider(cluster, NOW)
    metrics = Metrics()
    cells = CellReconciler(cluster, cluster, clock, {"kwok": provider}, metrics=metrics)
    for _ in range(4):
        clock.advance(2)
        provider.now = clock.now()
        await cells.reconcile("workers")
    revision = next(n.revision for n in cluster.nodes())
    assert revision is not None
    for zone in ("zone-a", "zone-b"):
        cell = f"{zone}/on-demand"
        labels = {"group": "workers", "revision": revision, "cell": cell}
        assert value(metrics, "molt_group_nodes", **labels, state="desired") == 2
        assert value(metrics, "molt_group_nodes", **labels, state="ready") == 2
        # Launched after the first look at the group, so each counts once.
        assert value(metrics, "molt_launches_total", group="workers", cell=cell) == 2
        assert value(metrics, "molt_routed_nodes", group="workers", cell=cell) == 0
    assert value(metrics, "molt_revision_degraded", group="workers", revision=revision) == 0
    assert value(metrics, "molt_host_init_seconds_count", group="workers", revision=revision) == 4
    status = cluster.instance_groups["workers"].status
    assert status is not None
    assert status.host_init is not None
    assert status.host_init.samples == 4
    [current] = [r for r in status.revisions if r.name == revision]
    assert current.host_init == status.host_init

    provider.capacity_errors.add(("zone-b", "on-demand"))
    for node_view in [n for n in cluster.nodes() if n.zone == "zone-b"][:1]:
        await provider.terminate_instance(provider._cell_of(node_view), node_view.name)
    for _ in range(3):
        clock.advance(2)
        provider.now = clock.now()
        await cells.reconcile("workers")
    assert value(metrics, "molt_routed_nodes", group="workers", cell="zone-b/on-demand") == 2
    assert value(metrics, "molt_launch_failures_total", group="workers", cell="zone-b/on-demand")

    del cluster.instance_groups["workers"]
    await cells.reconcile("workers")
    assert value(metrics, "molt_routed_nodes", group="workers", cell="zone-b/on-demand") is None
    assert (
        value(
            metrics,
            "molt_group_nodes",
            group="workers",
            revision=revision,
            cell="zone-a/on-demand",
            state="ready",
        )
        is None
    )


def test_host_init_counts_a_launch_stamped_in_the_second_the_controller_started() -> None:
    metrics = Metrics()
    started = NOW + timedelta(milliseconds=700)
    gauges = GroupMetrics(metrics, started)
    ready = node("n1", conditions=(NodeCondition("Ready", "True", NOW + timedelta(seconds=9)),))
    earlier = node("n0", conditions=(NodeCondition("Ready", "True", NOW),))
    launched = {"n1": NOW, "n0": NOW - timedelta(seconds=1)}  # second precision
    seen = gauges.became_ready("workers", [ready, earlier], launched, NOW + timedelta(seconds=10))
    assert seen == [("rev1", 9.0)]
    assert value(metrics, "molt_host_init_seconds_count", group="workers", revision="rev1") == 1
    assert value(metrics, "molt_host_init_seconds_sum", group="workers", revision="rev1") == 9


# Selection: blocked drains.


async def test_the_longest_blocked_drain_is_timed_from_when_it_was_first_seen_blocked() -> None:
    blocked = {POLICY_ANNOTATION: "rotate", BLOCKED_ANNOTATION: "evictions refused: web"}
    cluster = FakeCluster(
        nodes=[node("stuck", state="draining", annotations=blocked)],
        policies=[policy("rotate"), policy("other")],
    )
    clock = FakeClock(NOW)
    metrics = Metrics()
    selection = SelectionReconciler(cluster, cluster, clock, metrics)
    await selection.reconcile()
    assert value(metrics, "molt_drain_blocked_longest_seconds", policy="rotate") == 0
    clock.advance(600)
    await selection.reconcile()
    assert value(metrics, "molt_drain_blocked_longest_seconds", policy="rotate") == 600
    assert value(metrics, "molt_drain_blocked_longest_seconds", policy="other") == 0
    rollout = {BLOCKED_ANNOTATION: "evictions refused: db"}  # a group selected it: no policy
    cluster.add_node(node("rolled", state="draining", annotations=rollout))
    clock.advance(30)
    await selection.reconcile()
    assert value(metrics, "molt_drain_blocked_longest_seconds", policy=NO_POLICY) == 0
    assert value(metrics, "molt_drain_blocked_longest_seconds", policy="rotate") == 630
    unblocked = node("stuck", state="draining", annotations={POLICY_ANNOTATION: "rotate"})
    cluster.add_node(unblocked)
    clock.advance(60)
    await selection.reconcile()
    assert value(metrics, "molt_drain_blocked_longest_seconds", policy="rotate") == 0


async def test_node_ages_are_observed_once_per_resync_however_often_selection_runs() -> None:
    cluster = FakeCluster(nodes=[node("a", age_hours=2), node("b", age_hours=3)])
    clock = FakeClock(NOW)
    metrics = Metrics()
    selection = SelectionReconciler(cluster, cluster, clock, metrics, resync_seconds=30)
    for _ in range(5):  # five passes within one resync
        await selection.reconcile()
        clock.advance(1)
    assert value(metrics, "molt_node_age_seconds_count", group="workers") == 2
    clock.advance(30)
    await selection.reconcile()
    assert value(metrics, "molt_node_age_seconds_count", group="workers") == 4
    assert value(metrics, "molt_node_oldest_age_seconds", group="workers") == pytest.approx(
        3 * HOUR + 35
    )


# Series sets.


def test_series_of_a_revision_that_went_away_are_removed() -> None:
    metrics = Metrics()
    sets = metrics.degraded_series
    sets.replace("g", {("g", "old"): 1.0, ("g", "new"): 0.0})
    sets.replace("g", {("g", "new"): 0.0})
    assert value(metrics, "molt_revision_degraded", group="g", revision="old") is None
    assert value(metrics, "molt_revision_degraded", group="g", revision="new") == 0


# The work queue.


class Tick:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_work_queue_reports_client_go_measurements() -> None:
    tick = Tick()
    metrics = Metrics()
    queue: WorkQueue[str] = WorkQueue(clock=tick, metrics=metrics.workqueue("molt"))
    queue.add("a")
    queue.add("a")  # deduplicated: not an add
    queue.add("b")
    assert value(metrics, "workqueue_adds_total", name="molt") == 2
    assert value(metrics, "workqueue_depth", name="molt") == 2
    tick.now += 3
    key = await queue.get()
    assert value(metrics, "workqueue_depth", name="molt") == 1
    assert value(metrics, "workqueue_queue_duration_seconds_count", name="molt") == 1
    assert value(metrics, "workqueue_queue_duration_seconds_sum", name="molt") == 3
    tick.now += 5
    assert value(metrics, "workqueue_longest_running_processor_seconds", name="molt") == 5
    await queue.get()
    tick.now += 1
    assert value(metrics, "workqueue_unfinished_work_seconds", name="molt") == 6 + 1
    queue.add_rate_limited(key)
    queue.done(key)
    assert value(metrics, "workqueue_retries_total", name="molt") == 1
    assert value(metrics, "workqueue_work_duration_seconds_sum", name="molt") == 6
    assert value(metrics, "workqueue_longest_running_processor_seconds", name="molt") == 1


# The name extraction the export test relies on.


def test_metric_names_are_told_from_functions_labels_keywords_and_numbers() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, group) (rate(molt_host_init_seconds_bucket"
        '{group=~"$group", cell="a/b"}[$__rate_interval]))) > 1e-3 and on (group) '
        "max without (x) (molt_leader offset 5m) or absent(up) unless vector(1)"
    )
    assert metric_names(expr) == {"molt_host_init_seconds_bucket", "molt_leader", "up"}


def test_the_exposition_names_sampled_and_declared_metrics() -> None:
    metrics = Metrics()
    metrics.in_flight.labels(policy="p").set(1)
    sampled, declared = exposition_names(generate_latest(metrics.registry).decode())
    assert "molt_nodes_in_flight" in sampled
    assert "molt_watchdog_state" in declared - sampled
    assert "molt_host_init_seconds_bucket" in declared - sampled
    assert "molt_drain_duration_seconds_bucket" in sampled
