"""Cells: stable template revisions, an even split over zones, spot share, and routing
around unavailable cells."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from molt.api.instancegroup import Capacity, Template
from molt.policy.cells import (
    CellKey,
    split_capacity,
    spot_share,
    template_revision,
)

ZONES = ["zone-a", "zone-b", "zone-c"]
ON_DEMAND_ONLY = Capacity()
HALF_SPOT = Capacity(types=["on-demand", "spot"], on_demand_base=2, spot_percent=50)


def _template(**changes: object) -> Template:
    fields: dict[str, object] = {"instanceTypes": ["m5.large"], "labels": {"a": "1", "b": "2"}}
    fields.update(changes)
    return Template.model_validate(fields)


def test_equal_templates_have_the_same_revision_whatever_the_key_order() -> None:
    first = _template(labels={"a": "1", "b": "2"})
    second = _template(labels={"b": "2", "a": "1"})
    assert template_revision(first) == template_revision(second)
    assert len(template_revision(first)) == 10


def test_any_template_change_makes_a_new_revision() -> None:
    base = template_revision(_template())
    assert template_revision(_template(image="ami-2")) != base
    assert template_revision(_template(instanceTypes=["m5a.large", "m5.large"])) != base
    assert template_revision(_template(kwok={"bootDelay": "5s"})) != base


def test_six_on_demand_nodes_spread_two_per_zone() -> None:
    plan = split_capacity(6, ZONES, ON_DEMAND_ONLY)
    assert plan.cells == {CellKey(z, "on-demand"): 2 for z in ZONES}
    assert plan.unplaced == 0


def test_spot_is_bought_above_the_on_demand_base() -> None:
    # 10 nodes: 2 base on demand, half of the other 8 on spot.
    assert spot_share(10, HALF_SPOT) == 4
    plan = split_capacity(10, ZONES, HALF_SPOT)
    spot = sum(n for k, n in plan.cells.items() if k.capacity_type == "spot")
    assert spot == 4
    assert plan.total == 10


def test_an_unavailable_zone_s_share_moves_to_the_other_zones() -> None:
    plan = split_capacity(6, ZONES, ON_DEMAND_ONLY, frozenset({CellKey("zone-b", "on-demand")}))
    assert plan.cells[CellKey("zone-b", "on-demand")] == 0
    assert plan.zone_total("zone-a") == 3
    assert plan.zone_total("zone-c") == 3
    assert any("zone-b/on-demand unavailable" in note for note in plan.notes)


def test_spot_short_everywhere_falls_back_to_on_demand() -> None:
    no_spot = frozenset(CellKey(z, "spot") for z in ZONES)
    plan = split_capacity(10, ZONES, HALF_SPOT, no_spot)
    assert all(n == 0 for k, n in plan.cells.items() if k.capacity_type == "spot")
    assert plan.total == 10
    assert plan.unplaced == 0
    assert any("fall back to on-demand" in note for note in plan.notes)


def test_with_every_cell_unavailable_nothing_is_placed_and_that_is_said() -> None:
    everything = frozenset(CellKey(z, "on-demand") for z in ZONES)
    plan = split_capacity(4, ZONES, ON_DEMAND_ONLY, everything)
    assert plan.total == 0
    assert plan.unplaced == 4


@given(
    total=st.integers(min_value=0, max_value=200),
    zones=st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5),
    spot_percent=st.integers(min_value=0, max_value=100),
    base=st.integers(min_value=0, max_value=20),
    down=st.sets(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from(["on-demand", "spot"])
        )
    ),
)
def test_a_split_places_every_node_once_never_in_an_unavailable_cell_and_stays_balanced(
    total: int, zones: list[str], spot_percent: int, base: int, down: set[tuple[str, str]]
) -> None:
    capacity = Capacity(types=["on-demand", "spot"], on_demand_base=base, spot_percent=spot_percent)
    unavailable = frozenset(CellKey(z, t) for z, t in down)
    plan = split_capacity(total, zones, capacity, unavailable)

    assert plan.total + plan.unplaced == total
    assert all(plan.cells.get(key, 0) == 0 for key in unavailable)
    open_on_demand = [z for z in set(zones) if CellKey(z, "on-demand") not in unavailable]
    if open_on_demand:
        assert plan.unplaced == 0
    if not unavailable:
        totals = [plan.zone_total(z) for z in set(zones)]
        assert max(totals) - min(totals) <= 1
        spot = sum(n for k, n in plan.cells.items() if k.capacity_type == "spot")
        assert spot == spot_share(total, capacity)
