"""An InstanceGroup's status as the status phase computes it, and its shape on the wire:
``observedGeneration`` always written, absent fields omitted, times at second precision,
and transition times ignored when telling whether anything changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from molt.api import InstanceGroup
from molt.controllers.instancegroup.memory import GroupMemory
from molt.controllers.instancegroup.scope import CellFigures, GroupScope
from molt.controllers.instancegroup.status import group_status, wire, without_times
from molt.policy.cells import CellKey, template_revision
from molt.policy.host_init import SAMPLES, HostInitFigures, figures, keep_latest
from tests.support.builders import instance_group
from tests.support.fleet import NOW

pytestmark = pytest.mark.unit


def scope(generation: int | None = None, **memory: Any) -> GroupScope:
    manifest = instance_group("workers")
    if generation is not None:
        manifest["metadata"]["generation"] = generation
    group = InstanceGroup.model_validate(manifest)
    revision = template_revision(group.spec.template)
    remembered = GroupMemory(**memory)
    remembered.follow_template(revision, group.spec.template)
    found = GroupScope(group, remembered, [], revision, NOW.replace(microsecond=250_000))
    found.cells = [CellFigures(CellKey("zone-b", "on-demand"), 2)]
    return found


def test_the_wire_status_writes_observed_generation_even_when_there_is_none() -> None:
    body = wire(group_status(scope()))
    assert body["observedGeneration"] is None
    assert all(c["observedGeneration"] is None for c in body["conditions"])
    assert wire(group_status(scope(generation=3)))["observedGeneration"] == 3


def test_the_wire_status_omits_what_is_absent_and_keeps_the_template_json() -> None:
    body = wire(group_status(scope(generation=1)))
    (revision,) = body["revisions"]
    assert revision["state"] == "Current"
    assert "message" not in revision
    assert revision["template"] == {
        "instanceTypes": ["m5.large"],
        "labels": {},
        "taints": [],
        "kwok": {"bootDelay": "5s", "neverReady": False},
    }
    (cell,) = body["cells"]
    assert cell == {
        "zone": "zone-b",
        "capacityType": "on-demand",
        "revision": revision["name"],
        "desired": 2,
        "ready": 0,
        "available": True,
    }
    assert {c["lastTransitionTime"] for c in body["conditions"]} == {"2026-11-23T12:00:00Z"}


def test_a_resting_cell_says_until_when_and_a_degraded_revision_why() -> None:
    found = scope(generation=1, resting={CellKey("zone-b", "on-demand"): NOW + timedelta(hours=1)})
    found.memory.degraded[found.template_revision] = "2 of 3 cells failing"
    body = wire(group_status(found))
    assert body["state"] == "Degraded"
    assert body["cells"][0]["available"] is False
    assert body["cells"][0]["unavailableUntil"] == "2026-11-23T13:00:00Z"
    assert body["revisions"][0]["message"] == "2 of 3 cells failing"


def test_only_transition_times_do_not_count_as_a_change() -> None:
    earlier = group_status(scope(generation=1))
    later_scope = scope(generation=1)
    later_scope.now += timedelta(minutes=5)
    later = group_status(later_scope)
    assert wire(earlier) != wire(later)
    assert without_times(earlier) == without_times(later)
    later_scope.cells = [CellFigures(CellKey("zone-b", "on-demand"), 3)]
    assert without_times(group_status(later_scope)) != without_times(earlier)


def test_host_init_is_the_nearest_rank_median_and_p90_of_the_latest_launches() -> None:
    assert figures([]) is None
    assert figures([30.0]) == HostInitFigures(30, 30, 1)
    assert figures([float(s) for s in range(1, 11)]) == HostInitFigures(5, 9, 10)
    samples: list[float] = []
    for seconds in range(120):
        keep_latest(samples, float(seconds))
    assert len(samples) == SAMPLES
    assert samples[0] == 70.0, "the oldest launches drop out"
