"""InstanceGroup status: the current revision is the template's hash, nodes of other
revisions are outdated, and the status is written only when it changes."""

from __future__ import annotations

from molt.api import InstanceGroup
from molt.controllers.instancegroup.status import GroupStatusReconciler, group_status
from molt.policy.cells import template_revision
from molt.policy.snapshot import NodeCondition
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster
from tests.support.fleet import NOW, node

READY = (NodeCondition("Ready", "True", NOW),)
GROUP = InstanceGroup.model_validate(instance_group("workers", replicas=3, minSize=3))
CURRENT = template_revision(GROUP.spec.template)


def test_nodes_of_another_revision_keep_the_group_progressing() -> None:
    nodes = [
        node("new-0", revision=CURRENT, conditions=READY),
        node("new-1", revision=CURRENT, conditions=READY),
        node("old-0", revision="older", conditions=READY),
    ]
    status = group_status(GROUP, nodes, NOW)
    assert status["currentRevision"] == CURRENT
    assert status["state"] == "Progressing"
    assert status["updatedReplicas"] == 2
    assert [(r["name"], r["replicas"], r["state"]) for r in status["revisions"]] == [
        (CURRENT, 2, "Current"),
        ("older", 1, "Outdated"),
    ]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert "1 of older revisions to replace" in ready["message"]


def test_a_group_of_current_ready_nodes_is_ready() -> None:
    nodes = [node(f"n-{i}", revision=CURRENT, conditions=READY) for i in range(3)]
    status = group_status(GROUP, nodes, NOW)
    assert status["state"] == "Ready"
    assert status["readyReplicas"] == 3


async def test_the_status_is_written_once_until_something_changes() -> None:
    cluster = FakeCluster(
        nodes=[node(f"n-{i}", revision=CURRENT, conditions=READY) for i in range(3)],
        groups=[GROUP],
    )
    clock = FakeClock(NOW)
    reconciler = GroupStatusReconciler(cluster, cluster, clock)
    await reconciler.reconcile()
    clock.advance(60)
    await reconciler.reconcile()
    assert len(cluster.group_status_patches) == 1
    cluster.add_node(node("n-3", revision="older", conditions=READY))
    await reconciler.reconcile()
    assert len(cluster.group_status_patches) == 2
    stored = cluster.instance_group("workers")
    assert stored is not None
    assert stored.status is not None
    assert stored.status.current_revision == CURRENT
