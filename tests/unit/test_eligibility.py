"""Selection with an eligibility schedule decides exactly as selection without one, while
it skips nodes whose moment has not come."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from molt.policy.eligibility import EligibilitySchedule
from molt.policy.selection import Selection, max_age_due, select_candidates
from molt.policy.snapshot import GroupView, NodeCondition, NodeTaint, NodeView, Snapshot
from tests.support.fleet import NOW, node, policy

ROTATE = policy(rules={"maxAge": "48h", "maxAgeJitter": "2h"}, drain={"timeout": "30m"})
GROUPS = {"workers": GroupView("workers", "rev1")}


def _names(selection: Selection) -> list[str]:
    return [c.node for c in selection.candidates]


def _fleet() -> list[NodeView]:
    return [node(f"n{i}", age_hours=40 + i * 0.25) for i in range(32)]


def test_every_pass_over_a_day_selects_what_a_fresh_selection_selects() -> None:
    schedule = EligibilitySchedule()
    fleet = _fleet()
    for minutes in range(0, 24 * 60, 10):
        snapshot = Snapshot(tuple(fleet), GROUPS)
        at = NOW + timedelta(minutes=minutes)
        remembered = select_candidates(ROTATE, snapshot, at, schedule)
        fresh = select_candidates(ROTATE, snapshot, at)
        assert remembered == fresh


def test_a_skipped_node_is_selected_the_moment_its_age_allows() -> None:
    schedule = EligibilitySchedule()
    young = node("young", age_hours=30)
    snapshot = Snapshot((young,), GROUPS)
    assert _names(select_candidates(ROTATE, snapshot, NOW, schedule)) == []

    due = max_age_due(ROTATE, young, snapshot, NOW)
    assert due is not None
    assert _names(select_candidates(ROTATE, snapshot, due - timedelta(seconds=1), schedule)) == []
    assert _names(select_candidates(ROTATE, snapshot, due, schedule)) == ["young"]


def test_a_changed_node_is_judged_again() -> None:
    schedule = EligibilitySchedule()
    young = node("n", age_hours=1)
    select_candidates(ROTATE, Snapshot((young,), GROUPS), NOW, schedule)

    relaunched_long_ago = dataclasses.replace(young, launched_at=NOW - timedelta(hours=50))
    selection = select_candidates(ROTATE, Snapshot((relaunched_long_ago,), GROUPS), NOW, schedule)

    assert _names(selection) == ["n"]


def test_a_stricter_group_max_age_is_seen_at_once() -> None:
    schedule = EligibilitySchedule()
    fleet = (node("n", age_hours=30),)
    select_candidates(ROTATE, Snapshot(fleet, GROUPS), NOW, schedule)

    stricter = {"workers": GroupView("workers", "rev1", max_node_age_seconds=24 * 3600)}
    selection = select_candidates(ROTATE, Snapshot(fleet, stricter), NOW, schedule)

    assert _names(selection) == ["n"]


def test_a_changed_policy_spec_is_seen_at_once() -> None:
    schedule = EligibilitySchedule()
    fleet = (node("n", age_hours=30),)
    select_candidates(ROTATE, Snapshot(fleet, GROUPS), NOW, schedule)

    shorter = policy(rules={"maxAge": "24h"}, drain={"timeout": "30m"})
    selection = select_candidates(shorter, Snapshot(fleet, GROUPS), NOW, schedule)

    assert _names(selection) == ["n"]


def test_invalidating_a_group_judges_its_nodes_again() -> None:
    schedule = EligibilitySchedule()
    fleet = (node("n", age_hours=30),)
    snapshot = Snapshot(fleet, GROUPS)
    select_candidates(ROTATE, snapshot, NOW, schedule)
    assert schedule.waiting(ROTATE, fleet[0], GROUPS["workers"], NOW)

    schedule.invalidate_group("workers")

    assert not schedule.waiting(ROTATE, fleet[0], GROUPS["workers"], NOW)


def test_under_a_spread_a_pool_that_changes_is_judged_afresh() -> None:
    # A leveled expiry depends on the other nodes of the pool: a node born with its pool
    # is planned early, so the schedule must not keep a moment worked out without them.
    leveling = policy(rules={"maxAge": "48h", "maxAgeSpread": "24h"}, drain={"timeout": "30m"})
    schedule = EligibilitySchedule()
    alone = [node("n0", age_hours=20)]
    cliff = alone + [node(f"n{i}", age_hours=20) for i in range(1, 12)]
    for minutes in range(0, 30 * 60, 10):
        fleet = alone if minutes < 60 else cliff
        snapshot = Snapshot(tuple(fleet), GROUPS)
        at = NOW + timedelta(minutes=minutes)
        assert select_candidates(leveling, snapshot, at, schedule) == select_candidates(
            leveling, snapshot, at
        )


HEALTH = policy(
    rules={
        "maxAge": "48h",
        "maxAgeJitter": "2h",
        "drift": True,
        "conditions": [{"type": "Ready", "status": "False", "for": "10m"}],
        "taints": [{"key": "failing", "effect": "NoSchedule", "for": "30m"}],
        "labels": {"matchLabels": {"retire": "yes"}},
    },
    drain={"timeout": "30m"},
)


def _mixed_fleet() -> list[NodeView]:
    """Young and old nodes, some unready or tainted from a moment in the future, one
    drifted, one labelled: every rule has a node it selects later or never."""
    fleet = [node(f"n{i}", age_hours=30 + i * 0.5) for i in range(12)]
    fleet.append(
        node(
            "unready",
            age_hours=2,
            conditions=(NodeCondition("Ready", "False", NOW + timedelta(minutes=45)),),
        )
    )
    fleet.append(
        node(
            "tainted",
            age_hours=3,
            taints=(NodeTaint("failing", "NoSchedule", added=NOW + timedelta(hours=2)),),
        )
    )
    fleet.append(node("untimed-taint", age_hours=3, taints=(NodeTaint("failing", "NoSchedule"),)))
    fleet.append(node("drifted", age_hours=1, revision="rev0"))
    fleet.append(node("labelled", age_hours=1, labels={"retire": "yes"}))
    return fleet


def test_with_condition_taint_drift_and_label_rules_every_pass_selects_what_a_fresh_one_does() -> (
    None
):
    schedule = EligibilitySchedule()
    fleet = _mixed_fleet()
    skipped_some = False
    for minutes in range(0, 24 * 60, 5):
        snapshot = Snapshot(tuple(fleet), GROUPS)
        at = NOW + timedelta(minutes=minutes)
        remembered = select_candidates(HEALTH, snapshot, at, schedule)
        fresh = select_candidates(HEALTH, snapshot, at)
        assert remembered == fresh
        skipped_some = skipped_some or any(
            schedule.waiting(HEALTH, n, GROUPS.get(n.group or ""), at) for n in fleet
        )
    assert skipped_some  # the schedule did skip nodes, so the comparison above means something


def test_a_node_that_turns_unready_is_selected_once_the_condition_has_held() -> None:
    schedule = EligibilitySchedule()
    young = node("young", age_hours=1)
    assert _names(select_candidates(HEALTH, Snapshot((young,), GROUPS), NOW, schedule)) == []

    unready = dataclasses.replace(
        young, conditions=(NodeCondition("Ready", "False", NOW - timedelta(minutes=5)),)
    )
    snapshot = Snapshot((unready,), GROUPS)
    assert _names(select_candidates(HEALTH, snapshot, NOW, schedule)) == []
    later = NOW + timedelta(minutes=5)
    assert _names(select_candidates(HEALTH, snapshot, later, schedule)) == ["young"]


def test_a_node_whose_group_moves_on_is_selected_for_drift_at_once() -> None:
    schedule = EligibilitySchedule()
    fleet = (node("n", age_hours=1, revision="rev1"),)
    assert _names(select_candidates(HEALTH, Snapshot(fleet, GROUPS), NOW, schedule)) == []

    moved_on = {"workers": GroupView("workers", "rev2")}
    selection = select_candidates(HEALTH, Snapshot(fleet, moved_on), NOW, schedule)

    assert _names(selection) == ["n"]


def test_a_node_given_the_retire_label_is_selected_at_once() -> None:
    schedule = EligibilitySchedule()
    plain = node("n", age_hours=1)
    assert _names(select_candidates(HEALTH, Snapshot((plain,), GROUPS), NOW, schedule)) == []

    labelled = plain.patched(labels={"retire": "yes"})
    selection = select_candidates(HEALTH, Snapshot((labelled,), GROUPS), NOW, schedule)

    assert _names(selection) == ["n"]


def test_an_equal_group_view_keeps_the_moment_and_a_changed_one_drops_it() -> None:
    # Group views are rebuilt whenever the group's status is written: an equal one keeps
    # what was remembered (the pair found equal is remembered too), a changed one does not.
    schedule = EligibilitySchedule()
    young = node("n", age_hours=30)
    select_candidates(ROTATE, Snapshot((young,), GROUPS), NOW, schedule)
    rebuilt = GroupView("workers", "rev1")
    assert rebuilt is not GROUPS["workers"]
    assert schedule.waiting(ROTATE, young, rebuilt, NOW)
    assert schedule.waiting(ROTATE, young, rebuilt, NOW)

    stricter = GroupView("workers", "rev1", max_node_age_seconds=24 * 3600)
    assert not schedule.waiting(ROTATE, young, stricter, NOW)
    assert not schedule.waiting(ROTATE, young, None, NOW)
    assert schedule.waiting(ROTATE, young, rebuilt, NOW)
