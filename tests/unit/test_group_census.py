"""The instance-group reconcile's census: every observed instance matched once to the Node
it became, and matched again as soon as the observations or the members change, so no
phase ever judges an instance by a node that is gone or misses one that joined. Also the
launch counter's shortcut for observations it has already counted."""

from __future__ import annotations

from datetime import timedelta

import pytest

from molt.api import InstanceGroup
from molt.cloud.provider import CellObservation, CellRef, Instance
from molt.controllers.instancegroup.gauges import GroupMetrics
from molt.controllers.instancegroup.memory import GroupMemory
from molt.controllers.instancegroup.scope import GroupScope
from molt.observe.metrics import Metrics
from molt.policy.cells import template_revision
from molt.policy.snapshot import NodeView
from tests.support.builders import instance_group
from tests.support.fleet import NOW, node

pytestmark = pytest.mark.unit

CELL = CellRef("workers", "rev1", "zone-a", "on-demand")


def scope_of(members: list[NodeView], *observations: CellObservation) -> GroupScope:
    group = InstanceGroup.model_validate(instance_group("workers"))
    found = GroupScope(group, GroupMemory(), members, template_revision(group.spec.template), NOW)
    found.observations = list(observations)
    return found


def instance(name: str) -> Instance:
    return Instance(f"i-{name}", NOW - timedelta(hours=1), node_name=name)


def observation(*names: str) -> CellObservation:
    return CellObservation(CELL, len(names), tuple(instance(n) for n in names))


def matched(scope: GroupScope) -> list[tuple[str, str | None]]:
    return [(i.instance_id, n.name if n else None) for _, i, n in scope.census()]


def test_the_census_matches_each_instance_to_its_node_once_per_look() -> None:
    scope = scope_of([node("a")], observation("a", "b"))
    assert matched(scope) == [("i-a", "a"), ("i-b", None)]
    assert scope.census() is scope.census()  # the same look: not matched again


def test_new_observations_are_matched_afresh() -> None:
    scope = scope_of([node("a"), node("b")], observation("a"))
    assert matched(scope) == [("i-a", "a")]
    scope.observations = [observation("a", "b")]
    assert matched(scope) == [("i-a", "a"), ("i-b", "b")]
    scope.observations.append(observation("c"))  # the same list, grown in place
    assert matched(scope) == [("i-a", "a"), ("i-b", "b"), ("i-c", None)]


def test_looking_again_matches_against_the_new_members() -> None:
    cells = observation("a", "b")
    scope = scope_of([node("a")], cells)
    assert matched(scope) == [("i-a", "a"), ("i-b", None)]
    scope.look_again([cells], [node("b")])  # the same observations, other members
    assert matched(scope) == [("i-a", None), ("i-b", "b")]


def launches(metrics: Metrics) -> float:
    found = metrics.registry.get_sample_value(
        "molt_launches_total", {"group": "workers", "cell": "zone-a/on-demand"}
    )
    return found or 0.0


def test_launches_are_counted_once_whether_the_observations_are_the_same_objects_or_not() -> None:
    metrics = Metrics()
    gauges = GroupMetrics(metrics, NOW)
    first = observation("a")
    gauges.observed("workers", [first])  # the first look only learns what is there
    gauges.observed("workers", [first])
    assert launches(metrics) == 0
    grown = observation("a", "b")
    gauges.observed("workers", [grown])
    gauges.observed("workers", [grown])  # the same objects again: nothing new
    assert launches(metrics) == 1
    gauges.observed("workers", [observation("a", "b")])  # equal but rebuilt: nothing new
    gauges.observed("workers", [observation("a", "b", "c")])
    assert launches(metrics) == 2


def test_only_the_cells_whose_observation_changed_are_counted_again() -> None:
    metrics = Metrics()
    gauges = GroupMetrics(metrics, NOW)
    other = CellRef("workers", "rev1", "zone-b", "on-demand")
    steady = CellObservation(other, 1, (instance("b1"),))
    gauges.observed("workers", [observation("a"), steady])
    gauges.observed("workers", [observation("a", "a2"), steady])
    assert launches(metrics) == 1
    gauges.observed("workers", [observation("a", "a2"), CellObservation(other, 0, ())])
    assert launches(metrics) == 1
    gauges.observed("workers", [observation("a", "a2"), steady])  # b1 listed again: counted
    zone_b = metrics.registry.get_sample_value(
        "molt_launches_total", {"group": "workers", "cell": "zone-b/on-demand"}
    )
    assert zone_b == 1
