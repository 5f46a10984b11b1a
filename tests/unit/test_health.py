"""Health is judged per cell: failures in one cell of a multi-cell revision never Degrade
it, failures past the threshold in every cell always do, a blink is not a failure and
NotReady that strikes several cells at once is the infrastructure's, not the template's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from molt.policy.cells import CellKey
from molt.policy.health import (
    CellRecord,
    NotReadyNode,
    degraded_backoff,
    judge_not_ready,
    judge_revision,
    past_threshold,
    struck_at_once,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
ZONES = ["zone-a", "zone-b", "zone-c", "zone-d"]
thresholds = st.one_of(
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=100).map(lambda p: f"{p}%"),
)


@st.composite
def records(draw: st.DrawFn) -> tuple[CellRecord, ...]:
    count = draw(st.integers(min_value=2, max_value=len(ZONES)))
    out = []
    for _ in range(count):
        launches = draw(st.integers(min_value=0, max_value=50))
        failures = draw(st.integers(min_value=0, max_value=launches))
        out.append(CellRecord(failures, launches))
    return tuple(out)


@given(records(), thresholds, st.integers(min_value=0, max_value=3))
def test_failures_confined_to_one_cell_never_degrade_a_multi_cell_revision(
    cells: tuple[CellRecord, ...], threshold: int | str, which: int
) -> None:
    failing_cell = which % len(cells)
    confined = {
        CellKey(ZONES[i], "on-demand"): r if i == failing_cell else CellRecord(0, r.launches)
        for i, r in enumerate(cells)
    }
    assert not judge_revision(confined, threshold, len(cells)).degraded


@given(
    st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=4),
    thresholds,
)
def test_failures_past_the_threshold_in_every_cell_always_degrade(
    launches: list[int], threshold: int | str
) -> None:
    # Every launch failed, and at least as many as a count threshold asks for.
    need = 0 if isinstance(threshold, str) else threshold
    cells = {
        CellKey(ZONES[i], "on-demand"): CellRecord(max(n, need, 2), max(n, need, 2))
        for i, n in enumerate(launches)
    }
    verdict = judge_revision(cells, threshold, len(cells))
    assert verdict.degraded
    assert verdict.failing == frozenset(cells)


def test_a_one_cell_group_is_degraded_by_its_only_cell() -> None:
    only = {CellKey("zone-a", "on-demand"): CellRecord(2, 3)}
    assert judge_revision(only, "50%", group_cells=1).degraded


def test_one_failure_is_not_a_rate() -> None:
    cells = {
        CellKey("zone-a", "on-demand"): CellRecord(1, 1),
        CellKey("zone-b", "on-demand"): CellRecord(0, 1),
    }
    verdict = judge_revision(cells, "50%", group_cells=2)
    assert verdict.failing == {CellKey("zone-a", "on-demand")}
    assert not verdict.degraded


def _node(
    name: str, zone: str, down_for: float, *, young: bool = True, rev: str = "r2"
) -> NotReadyNode:
    return NotReadyNode(
        name, CellKey(zone, "on-demand"), NOW - timedelta(seconds=down_for), young, rev
    )


def test_a_blink_shorter_than_not_ready_for_counts_against_nothing() -> None:
    verdict = judge_not_ready([_node("a1", "zone-a", 1)], 3, NOW, timedelta(minutes=2))
    assert verdict == judge_not_ready([], 3, NOW, timedelta(minutes=2))


def test_a_young_node_not_ready_past_not_ready_for_counts_against_its_cell() -> None:
    verdict = judge_not_ready([_node("a1", "zone-a", 150)], 3, NOW, timedelta(minutes=2))
    assert verdict.failing == ("a1",)


def test_not_ready_striking_several_cells_with_proven_nodes_at_once_is_excused() -> None:
    nodes = [
        _node("a1", "zone-a", 300),
        _node("b1", "zone-b", 305, young=False, rev="r1"),
        _node("c1", "zone-c", 301, rev="r1"),
    ]
    verdict = judge_not_ready(nodes, 9, NOW, timedelta(minutes=2))
    assert verdict.failing == ()
    assert verdict.excused == ("a1", "c1")


def test_the_whole_group_going_not_ready_at_once_is_excused_even_in_one_cell() -> None:
    nodes = [_node("a1", "zone-a", 300), _node("a2", "zone-a", 300)]
    assert judge_not_ready(nodes, 2, NOW, timedelta(minutes=2)).excused == ("a1", "a2")


def test_young_nodes_of_one_revision_failing_in_several_cells_still_count() -> None:
    # The template's own failure: the rest of the group stays Ready.
    nodes = [_node("a1", "zone-a", 300), _node("b1", "zone-b", 300)]
    assert judge_not_ready(nodes, 9, NOW, timedelta(minutes=2)).failing == ("a1", "b1")


def test_a_zone_outage_counts_against_that_zone_only() -> None:
    nodes = [_node("b1", "zone-b", 300), _node("b2", "zone-b", 300, young=False, rev="r1")]
    assert judge_not_ready(nodes, 9, NOW, timedelta(minutes=2)).failing == ("b1",)


def test_nodes_struck_by_a_burst_stay_excused_while_the_others_come_back_one_by_one() -> None:
    # kwok (or a network) back after an outage: the group's nodes turn Ready one by one,
    # and the last ones still NotReady are no longer "the whole group".
    zones = ["zone-a", "zone-b", "zone-c"] * 2
    group = [_node(f"n{i}", zone, 10) for i, zone in enumerate(zones)]
    onset = judge_not_ready(group, 6, NOW, timedelta(seconds=20))
    assert onset.failing == onset.excused == ()  # not past notReadyFor yet
    assert onset.struck == {n.name for n in group}
    later = NOW + timedelta(seconds=30)
    left = group[3:]
    forgetful = judge_not_ready(left, 6, later, timedelta(seconds=20))
    assert forgetful.failing == ("n3", "n4", "n5")  # what a verdict without memory says
    verdict = judge_not_ready(left, 6, later, timedelta(seconds=20), struck_before=onset.struck)
    assert verdict.failing == ()
    assert verdict.excused == ("n3", "n4", "n5")
    assert verdict.struck == {"n3", "n4", "n5"}  # the Ready ones are forgotten


def test_a_node_ready_again_after_a_burst_fails_if_it_then_goes_not_ready_on_its_own() -> None:
    lone = [_node("n1", "zone-a", 150)]
    struck = judge_not_ready(lone, 6, NOW, timedelta(minutes=2), struck_before=frozenset())
    assert struck.failing == ("n1",)
    # Passing back a verdict's struck set forgets nodes that were Ready in between.
    before = judge_not_ready([], 6, NOW, timedelta(minutes=2), struck_before=frozenset({"n1"}))
    assert before.struck == frozenset()


def test_dead_node_detection_keeps_a_burst_s_nodes_struck_too() -> None:
    left = [_node("n3", "zone-a", 30), _node("n4", "zone-b", 31), _node("n5", "zone-c", 32)]
    assert struck_at_once(left[:1], 6) == frozenset()
    assert struck_at_once(left[:1], 6, struck_before=frozenset({"n3", "n9"})) == {"n3"}


def test_degraded_is_retried_after_a_doubling_backoff_with_a_cap() -> None:
    window, cap = timedelta(minutes=30), timedelta(hours=6)
    waits = [degraded_backoff(n, window, cap) for n in range(1, 7)]
    assert waits[:4] == [timedelta(minutes=m) for m in (30, 60, 120, 240)]
    assert waits[4:] == [cap, cap]


def test_a_cell_is_past_the_threshold_at_a_count_or_a_percent_of_its_launches() -> None:
    assert not past_threshold(0, 10, "50%")
    assert not past_threshold(4, 10, "50%")
    assert past_threshold(5, 10, "50%")
    assert past_threshold(3, 3, 3)
    assert not past_threshold(2, 3, 3)
