"""The manager wakes the nodes waiting for their group's capacity when a node can stand
in for them: Ready for the first time, or Ready and labelled into the group later (a cloud
node registers itself bare, and Molt's registration labels it once it has joined)."""

from __future__ import annotations

import dataclasses

from molt.api import InstanceGroup
from molt.controllers.manager import ControllerManager
from molt.observe.metrics import Metrics
from molt.policy.snapshot import NodeCondition, NodeView
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster
from tests.support.fleet import NOW, node

READY = (NodeCondition("Ready", "True", NOW),)


def woken_by(old_labels: dict[str, str] | None, ready_before: bool) -> list[str]:
    waiting = node("old", age_hours=60, state="selected")
    cluster = FakeCluster(
        nodes=[waiting], groups=[InstanceGroup.model_validate(instance_group("workers"))]
    )
    manager = ControllerManager(cluster, cluster, FakeClock(NOW), Metrics(), providers={})
    joined = node("new", conditions=READY)
    before = (
        None
        if old_labels is None
        else dataclasses.replace(
            joined, labels=old_labels, conditions=READY if ready_before else ()
        )
    )
    added: list[str] = []
    manager.queue.add = added.append  # type: ignore[method-assign]
    manager.node_changed("new", before, joined)
    return [key for key in added if key.startswith("node/")]


def test_a_node_ready_for_the_first_time_wakes_the_waiting_ones() -> None:
    assert woken_by({"molt.dev/instance-group": "workers"}, ready_before=False) == ["node/old"]


def test_a_ready_node_labelled_into_the_group_wakes_them_too() -> None:
    assert woken_by({}, ready_before=True) == ["node/old"]


def test_a_heartbeat_of_a_ready_member_wakes_nobody() -> None:
    assert woken_by({"molt.dev/instance-group": "workers", **_rest()}, ready_before=True) == []


def _rest() -> dict[str, str]:
    """The other labels fleet.node gives a member, so only the heartbeat differs."""
    return {k: v for k, v in node("new").labels.items() if k != "molt.dev/instance-group"}


def group_wake(before: NodeView | None, after: NodeView | None) -> str:
    """How a node change wakes its group: ``now``, ``coalesced`` (after the debounce) or
    ``no``."""
    cluster = FakeCluster(
        nodes=[], groups=[InstanceGroup.model_validate(instance_group("workers"))]
    )
    manager = ControllerManager(cluster, cluster, FakeClock(NOW), Metrics(), providers={})
    now: list[str] = []
    later: list[str] = []
    manager.queue.add = now.append  # type: ignore[method-assign]
    manager.queue.add_after = lambda key, _delay: later.append(key)  # type: ignore[method-assign]
    manager.node_changed("n", before, after)
    if "group/workers" in now:
        return "now"
    return "coalesced" if "group/workers" in later else "no"


def test_what_changes_the_groups_next_step_wakes_it_at_once() -> None:
    old = node("n", conditions=READY)
    assert group_wake(None, old) == "now", "a node joined"
    assert group_wake(old, None) == "now", "a node went"
    assert group_wake(dataclasses.replace(old, conditions=()), old) == "now", "turned Ready"
    selected = node("n", conditions=READY, state="selected")
    assert group_wake(old, selected) == "now", "entered the pipeline"
    moved = node("n", conditions=READY, revision="rev2")
    assert group_wake(old, moved) == "now", "relabelled"


def test_steps_along_the_pipeline_are_coalesced() -> None:
    selected = node("n", conditions=READY, state="selected")
    cordoned = dataclasses.replace(
        selected,
        unschedulable=True,
        labels={
            **selected.labels,
            "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        },
    )
    draining = node("n", conditions=READY, state="draining", labels=dict(cordoned.labels))
    draining = dataclasses.replace(draining, unschedulable=True)
    assert group_wake(selected, cordoned) == "coalesced"
    assert group_wake(cordoned, draining) == "coalesced"
