"""The instance-group controller over in-memory fakes: cells, rollouts, rollback, capacity
routing and garbage collection, with the termination pipeline moving the nodes it picks.

Each round reconciles the group, then every node in the pipeline, then moves the clock,
and checks the strategy's promises: never more instances than desired + maxSurge (a full
second set under BlueGreen), never fewer Ready nodes outside the drain than desired -
maxUnavailable once the group has been whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from molt.api import InstanceGroup
from molt.controllers.instancegroup.reconciler import CellReconciler
from molt.controllers.termination.pipeline import PipelineReconciler
from molt.observe.metrics import Metrics
from molt.policy.cells import template_revision
from molt.policy.interruptions import Notice
from molt.policy.snapshot import NodeView
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider
from tests.support.fleet import NOW

BAD = {"instanceTypes": ["m5.large"], "image": "broken", "kwok": {"bootDelay": "5s"}}
FIXED = {"instanceTypes": ["m5.large"], "image": "fixed", "kwok": {"bootDelay": "5s"}}


def group(**spec: Any) -> InstanceGroup:
    spec.setdefault("health", {"readyTimeout": "1m", "window": "30m", "capacityCooldown": "3m"})
    return InstanceGroup.model_validate(instance_group("workers", **spec))


@dataclass
class Fleet:
    cluster: FakeCluster
    provider: FakeProvider
    clock: FakeClock
    cells: CellReconciler
    pipeline: PipelineReconciler
    peak_instances: int = 0
    floor_breaches: list[str] = field(default_factory=list)

    @property
    def spec(self) -> InstanceGroup:
        found = self.cluster.instance_group("workers")
        assert found is not None
        return found

    def revisions(self) -> Counter[str]:
        return Counter(n.revision or "" for n in self.cluster.nodes())

    def instances(self) -> int:
        return sum(len(found) for found in self.provider.instances.values())

    async def round(self) -> None:
        self.provider.now = self.clock.now()
        await self.cells.reconcile("workers")
        for node in list(self.cluster.nodes()):
            if node.in_pipeline:
                await self.pipeline.reconcile(node.name)
        self.peak_instances = max(self.peak_instances, self.instances())
        serving = [
            n
            for n in self.cluster.nodes()
            if n.ready and "molt.dev/replacement" not in n.annotations
        ]
        if len(serving) < self.spec.spec.desired_replicas:
            self.floor_breaches.append(f"{len(serving)} serving at {self.clock.now()}")
        self.clock.advance(2)

    async def rounds(self, count: int) -> None:
        for _ in range(count):
            await self.round()

    def change_template(self, template: dict[str, Any]) -> str:
        manifest = instance_group("workers", **self._spec_overrides)
        manifest["spec"]["template"] = template
        updated = InstanceGroup.model_validate(manifest)
        current = self.spec
        self.cluster.instance_groups["workers"] = updated.model_copy(
            update={"status": current.status}
        )
        self._spec_overrides["template"] = template
        return template_revision(updated.spec.template)

    _spec_overrides: dict[str, Any] = field(default_factory=dict)


def fleet(**spec: Any) -> Fleet:
    spec.setdefault("health", {"readyTimeout": "1m", "window": "30m", "capacityCooldown": "3m"})
    cluster = FakeCluster(groups=[group(**spec)])
    clock = FakeClock(NOW)
    provider = FakeProvider(cluster, now=NOW)
    providers = {"kwok": provider}
    built = Fleet(
        cluster,
        provider,
        clock,
        CellReconciler(cluster, cluster, clock, providers),
        PipelineReconciler(cluster, cluster, clock, Metrics(), providers=providers),
    )
    built._spec_overrides = dict(spec)
    return built


def by_zone(nodes: list[NodeView]) -> dict[str, int]:
    return dict(sorted(Counter(n.zone or "" for n in nodes).items()))


async def test_a_new_group_is_spread_evenly_over_its_zones_at_the_template_revision() -> None:
    workers = fleet()
    await workers.rounds(2)

    revision = template_revision(workers.spec.spec.template)
    assert by_zone(workers.cluster.nodes()) == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    assert workers.revisions() == Counter({revision: 6})
    status = workers.spec.status
    assert status is not None
    assert (status.current_revision, status.state, status.ready_replicas) == (revision, "Ready", 6)
    assert sorted((c.zone, c.desired, c.ready) for c in status.cells) == [
        ("zone-a", 2, 2),
        ("zone-b", 2, 2),
        ("zone-c", 2, 2),
    ]


async def test_the_status_is_written_only_when_it_changes() -> None:
    workers = fleet()
    await workers.rounds(2)
    written = len(workers.cluster.group_status_patches)

    await workers.rounds(5)

    assert len(workers.cluster.group_status_patches) == written


async def test_rolling_replace_renews_every_node_within_max_surge_and_never_below_size() -> None:
    workers = fleet(strategy={"type": "RollingReplace", "maxSurge": 1, "maxUnavailable": 0})
    await workers.rounds(2)
    workers.peak_instances = 0

    new = workers.change_template(FIXED)
    await workers.rounds(40)

    assert workers.revisions() == Counter({new: 6})
    assert workers.peak_instances == 7
    assert workers.floor_breaches == []
    reasons = {e.reason for e in workers.cluster.events}
    assert "Selected" in reasons
    assert any("drift: revision" in e.message for e in workers.cluster.events)
    assert workers.spec.status is not None
    assert workers.spec.status.state == "Ready"


async def test_a_larger_surge_replaces_more_nodes_at_once() -> None:
    workers = fleet(strategy={"type": "RollingReplace", "maxSurge": 3, "maxUnavailable": 0})
    await workers.rounds(2)
    workers.peak_instances = 0

    new = workers.change_template(FIXED)
    await workers.rounds(20)

    assert workers.revisions() == Counter({new: 6})
    assert workers.peak_instances == 9
    assert workers.floor_breaches == []


async def test_max_unavailable_without_surge_replaces_a_node_before_launching_its_successor() -> (
    None
):
    workers = fleet(strategy={"type": "RollingReplace", "maxSurge": 0, "maxUnavailable": 1})
    await workers.rounds(2)
    workers.peak_instances = 0

    new = workers.change_template(FIXED)
    await workers.rounds(40)

    assert workers.revisions() == Counter({new: 6})
    assert workers.peak_instances == 6


async def test_blue_green_brings_up_the_whole_new_revision_before_any_old_node_goes() -> None:
    workers = fleet(strategy={"type": "BlueGreen"})
    await workers.rounds(2)
    old = template_revision(workers.spec.spec.template)

    new = workers.change_template(FIXED)
    await workers.round()

    assert workers.revisions() == Counter({old: 6, new: 6})
    assert not any(n.in_pipeline for n in workers.cluster.nodes())
    await workers.rounds(10)
    assert workers.revisions() == Counter({new: 6})
    assert workers.floor_breaches == []
    old_cells = [c for c in workers.provider.deleted_cells if c.revision == old]
    assert len(old_cells) == 3


async def test_a_template_whose_nodes_never_join_is_rolled_back() -> None:
    workers = fleet()
    await workers.rounds(2)
    old = template_revision(workers.spec.spec.template)

    workers.provider.join = False
    bad = workers.change_template(BAD)
    await workers.rounds(80)  # 160 s: readyTimeout is 1 m, so two launches time out

    status = workers.spec.status
    assert status is not None
    assert status.current_revision == old
    assert status.state == "Degraded"
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "RolledBack")
    assert f"revision {bad} is degraded" in degraded.message
    events = [e for e in workers.cluster.events if e.reason == "RevisionDegraded"]
    assert len(events) == 1
    assert f"rolling back to revision {old}" in events[0].message
    assert workers.provider.nodes_in(bad) == []  # the failing revision scaled down
    assert workers.revisions() == Counter({old: 6})  # capacity stayed with the old one
    assert workers.floor_breaches == []
    [bad_status] = [r for r in status.revisions if r.name == bad]
    assert (bad_status.state, bad_status.launch_failures >= 2) == ("Degraded", True)


async def test_a_fixed_template_rolls_forward_after_a_rollback() -> None:
    workers = fleet()
    await workers.rounds(2)
    workers.provider.join = False
    workers.change_template(BAD)
    await workers.rounds(80)

    workers.provider.join = True
    fixed = workers.change_template(FIXED)
    await workers.rounds(40)

    status = workers.spec.status
    assert status is not None
    assert (status.current_revision, status.state) == (fixed, "Ready")
    assert workers.revisions() == Counter({fixed: 6})


async def test_a_cell_out_of_capacity_has_its_share_moved_at_once_and_back_after_cooldown() -> None:
    workers = fleet()
    workers.provider.capacity_errors.add(("zone-b", "on-demand"))

    await workers.round()

    assert by_zone(workers.cluster.nodes()) == {"zone-a": 3, "zone-c": 3}
    assert any(e.reason == "CellUnavailable" for e in workers.cluster.events)
    status = workers.spec.status
    assert status is not None
    [zone_b] = [c for c in status.cells if c.zone == "zone-b"]
    assert (zone_b.available, zone_b.unavailable_until is not None) == (False, True)

    workers.provider.capacity_errors.clear()
    await workers.rounds(130)  # cool-down 3 m, then the share returns through the pipeline

    assert by_zone(workers.cluster.nodes()) == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    assert workers.floor_breaches == []


async def test_a_zone_out_for_hours_costs_no_rebalance_and_is_refilled_launch_first() -> None:
    # The loop this guards against: each time zone-b's rest ran out, a zone-a node was
    # selected for being over its share, its replacement failed in zone-b and landed in
    # zone-a again, one needless drain per rest (3 m, then 6 m, 12 m, ... here).
    workers = fleet()
    workers.provider.capacity_errors.add(("zone-b", "on-demand"))
    await workers.rounds(330)  # 11 min: the rest runs out twice (after 3 m, then 6 m)

    assert by_zone(workers.cluster.nodes()) == {"zone-a": 3, "zone-c": 3}
    selected = [e.message for e in workers.cluster.events if e.reason == "Selected"]
    assert selected == [], "nodes were replaced while the zone could not take them"
    assert workers.instances() == 6

    workers.provider.capacity_errors.clear()
    await workers.rounds(450)  # the last rest (12 m) runs out, then two moves

    assert by_zone(workers.cluster.nodes()) == {"zone-a": 2, "zone-b": 2, "zone-c": 2}
    selected = [e.message for e in workers.cluster.events if e.reason == "Selected"]
    assert len(selected) == 2, selected  # one node per move, each after its successor stood
    assert workers.peak_instances <= 7
    assert workers.floor_breaches == []


async def test_a_node_whose_instance_is_gone_is_deleted() -> None:
    workers = fleet()
    await workers.rounds(2)
    victim = workers.cluster.nodes()[0]
    workers.cluster.add_node(
        NodeView(
            name="stray",
            created=NOW,
            labels=dict(victim.labels),
            conditions=victim.conditions,
            provider_id="kwok://stray",
        )
    )

    await workers.rounds(2)

    assert workers.cluster.node("stray") is None
    assert "stray" in workers.cluster.deleted_nodes


async def test_a_zone_that_cannot_launch_keeps_its_nodes_and_the_others_make_up_the_loss() -> None:
    # maxUnavailable 1 leaves room to drain a node: none must be, for the outage alone.
    workers = fleet(strategy={"type": "RollingReplace", "maxSurge": 1, "maxUnavailable": 1})
    await workers.rounds(2)
    [lost, *_] = [n for n in workers.cluster.nodes() if n.zone == "zone-b"]
    workers.provider.capacity_errors.add(("zone-b", "on-demand"))
    await workers.provider.terminate(lost)  # e.g. reclaimed, and zone-b cannot replace it

    await workers.rounds(25)  # 50 s, within the 3 m cool-down

    zone_b = [n.name for n in workers.cluster.nodes() if n.zone == "zone-b"]
    assert len(zone_b) == 1
    drained = [e.node for e in workers.cluster.events if e.reason == "Selected"]
    assert drained == [], "nothing needed replacing, yet nodes were drained"
    assert sorted(by_zone(workers.cluster.nodes()).values()) == [1, 2, 3]
    assert workers.instances() == 6


async def test_a_spot_interruption_rests_its_cell_so_the_replacement_launches_elsewhere() -> None:
    workers = fleet(capacity={"types": ["spot"], "spotPercent": 100})
    await workers.rounds(2)
    [reclaimed, *_] = [n for n in workers.cluster.nodes() if n.zone == "zone-b"]
    notice = Notice("spot-interruption", "i-1", workers.clock.now(), "e-1")
    await workers.cluster.patch_node(
        reclaimed.name,
        labels={"molt.dev/state": "selected"},
        annotations={"molt.dev/interruption": notice.annotation()},
    )

    await workers.rounds(10)

    assert workers.cluster.node(reclaimed.name) is None
    assert by_zone(workers.cluster.nodes()) == {"zone-a": 3, "zone-b": 1, "zone-c": 2}
    unavailable = [e.message for e in workers.cluster.events if e.reason == "CellUnavailable"]
    assert len(unavailable) == 1
    assert "zone-b/spot" in unavailable[0]
