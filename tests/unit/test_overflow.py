"""Overflow between instance groups: a group whose cells cannot launch has another group
run its missing replicas, and takes them back, through the pipeline, once its own nodes
are Ready again (``molt.policy.overflow`` and the scaling phase)."""

from __future__ import annotations

from typing import Any

from molt.api import InstanceGroup
from molt.controllers.instancegroup.reconciler import CellReconciler
from molt.controllers.termination.pipeline import PipelineReconciler
from molt.observe.metrics import Metrics
from molt.policy.overflow import borrowed_by, effective_desired, requested
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider
from tests.support.fleet import NOW

HEALTH = {"readyTimeout": "1m", "window": "30m", "capacityCooldown": "3m"}


def _group(name: str, zones: list[str], size: int, **spec: Any) -> InstanceGroup:
    return InstanceGroup.model_validate(
        instance_group(
            name, minSize=size, maxSize=size + 4, replicas=size, zones=zones, health=HEALTH, **spec
        )
    )


def test_a_short_group_asks_for_what_it_cannot_place_and_lacks_ready() -> None:
    assert requested(desired=3, ready=3, unplaced=0, already=0) == 0
    assert requested(desired=3, ready=1, unplaced=3, already=0) == 2, "only what is missing"
    assert requested(desired=3, ready=0, unplaced=1, already=0) == 1, "only what is unplaced"
    # Capacity is back: the request only shrinks, as the group's own nodes turn Ready.
    assert requested(desired=3, ready=1, unplaced=0, already=2) == 2
    assert requested(desired=3, ready=2, unplaced=0, already=2) == 1
    assert requested(desired=3, ready=3, unplaced=0, already=2) == 0


def test_only_requests_aimed_at_a_group_count_as_borrowed_from_it() -> None:
    def lender(name: str, target: str, asked: str, replicas: int) -> InstanceGroup:
        manifest = instance_group(
            name, minSize=3, maxSize=4, replicas=3, zones=["rack-1"], overflow={"group": target}
        )
        manifest["status"] = {"overflow": {"group": asked, "replicas": replicas}}
        return InstanceGroup.model_validate(manifest)

    cloud = _group("cloud", ["zone-a"], 2)
    groups = [
        cloud,
        lender("metal", "cloud", "cloud", 2),
        lender("stale", "cloud", "elsewhere", 5),  # its status names another group
        lender("moved", "elsewhere", "cloud", 7),  # its spec no longer overflows here
        None,
    ]
    assert borrowed_by("cloud", groups) == 2
    assert effective_desired(cloud, groups) == 4
    assert effective_desired(cloud, [cloud]) == 2


async def test_a_group_out_of_capacity_overflows_and_gets_its_replicas_back() -> None:
    metal = _group("metal", ["rack-1"], 3, overflow={"group": "cloud"})
    cloud = _group("cloud", ["zone-a"], 2)
    cluster = FakeCluster(groups=[metal, cloud])
    clock = FakeClock(NOW)
    provider = FakeProvider(cluster, now=NOW)
    providers = {"kwok": provider}
    cells = CellReconciler(cluster, cluster, clock, providers)
    pipeline = PipelineReconciler(cluster, cluster, clock, Metrics(), providers=providers)
    peak = {"cloud": 0}

    def count(name: str) -> int:
        return sum(1 for n in cluster.nodes() if n.group == name)

    async def rounds(n: int) -> None:
        for _ in range(n):
            provider.now = clock.now()
            for name in ("metal", "cloud"):
                await cells.reconcile(name)
            for node in list(cluster.nodes()):
                if node.in_pipeline:
                    await pipeline.reconcile(node.name)
            peak["cloud"] = max(peak["cloud"], count("cloud"))
            clock.advance(2)

    await rounds(3)
    assert (count("metal"), count("cloud")) == (3, 2)

    provider.capacity_errors.add(("rack-1", "on-demand"))
    [lost, *_] = [n for n in cluster.nodes() if n.group == "metal"]
    await provider.terminate(lost)  # a host fails, and the rack has no other
    await rounds(5)

    status = cluster.instance_group("metal").status  # type: ignore[union-attr]
    assert status is not None
    assert status.overflow is not None
    assert (status.overflow.group, status.overflow.replicas) == ("cloud", 1)
    assert count("cloud") == 3, "cloud runs the replica metal cannot"
    borrower = cluster.instance_group("cloud").status  # type: ignore[union-attr]
    assert borrower is not None
    assert borrower.borrowed == 1
    assert [e.reason for e in cluster.events].count("Overflowing") == 1

    provider.capacity_errors.clear()
    await rounds(130)  # the rack's rest runs out (3 m), metal launches, cloud hands back

    assert (count("metal"), count("cloud")) == (3, 2)
    assert peak["cloud"] == 3, "never more than the borrowed replica on top"
    status = cluster.instance_group("metal").status  # type: ignore[union-attr]
    assert status is not None
    assert status.overflow is None
    assert [e.reason for e in cluster.events].count("OverflowReturned") == 1
    handed_back = [e for e in cluster.events if e.reason == "Selected"]
    assert handed_back
    assert all(e.node.startswith("cloud") for e in handed_back), handed_back
