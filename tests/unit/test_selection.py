"""Which nodes a TerminationPolicy selects, and the reasons it gives."""

from datetime import timedelta

from molt.policy.selection import (
    Urgency,
    covered_nodes,
    covers,
    max_age_due,
    select_candidates,
)
from molt.policy.snapshot import GroupView, NodeCondition, NodeTaint, Snapshot
from tests.support.fleet import NOW, node, policy


def _select(nodes, rotate=None, groups=None):  # type: ignore[no-untyped-def]
    snapshot = Snapshot(tuple(nodes), groups or {})
    return select_candidates(rotate or policy(), snapshot, NOW)


def test_a_node_past_its_max_age_is_selected_with_a_readable_reason() -> None:
    selection = _select([node("old", age_hours=49.2), node("young", age_hours=10)])

    assert [c.node for c in selection.candidates] == ["old"]
    old = selection.candidates[0]
    assert old.reason == "max-age: 49h12m > 48h (past its deadline)"
    assert old.urgency == Urgency.PAST_DEADLINE
    assert old.deadline == NOW - timedelta(hours=49.2) + timedelta(hours=48)


def test_a_node_is_selected_a_drain_timeout_before_its_deadline() -> None:
    # 47h30m old, max age 48h, drain timeout 1h: it must start now to finish in time.
    selection = _select([node("n", age_hours=47.5)])

    assert selection.candidates[0].urgency == Urgency.AGED
    assert selection.candidates[0].reason.startswith("max-age: 47h30m > 47h")


def test_jitter_spreads_nodes_launched_together() -> None:
    rotate = policy(rules={"maxAge": "48h", "maxAgeJitter": "8h"}, drain={"timeout": "1m"})
    fleet = [node(f"n{i}", age_hours=44) for i in range(200)]

    chosen = len(_select(fleet, rotate).candidates)

    # Selected once age >= 48h - 8h * fraction: about half of the nodes at 44h.
    assert 60 < chosen < 140


def test_no_node_is_selected_later_than_its_deadline_minus_the_drain_lead() -> None:
    rotate = policy(rules={"maxAge": "48h", "maxAgeJitter": "4h"}, drain={"timeout": "2h"})
    fleet = [node(f"n{i}", age_hours=46) for i in range(100)]

    assert len(_select(fleet, rotate).candidates) == 100


def test_the_group_max_node_age_applies_when_stricter() -> None:
    groups = {"workers": GroupView("workers", "rev1", max_node_age_seconds=24 * 3600)}

    selection = _select([node("n", age_hours=30)], groups=groups)

    assert selection.candidates[0].reason == "max-age: 30h > 24h (past its deadline)"


def test_a_condition_must_be_held_for_its_duration() -> None:
    rotate = policy(rules={"conditions": [{"type": "Ready", "status": "False", "for": "5m"}]})
    long_sick = NodeCondition("Ready", "False", NOW - timedelta(minutes=6))
    just_sick = NodeCondition("Ready", "False", NOW - timedelta(minutes=2))

    selection = _select(
        [node("long", conditions=(long_sick,)), node("just", conditions=(just_sick,))], rotate
    )

    assert [c.node for c in selection.candidates] == ["long"]
    assert selection.candidates[0].reason == "condition: Ready=False for 6m >= 5m"
    assert selection.candidates[0].urgency == Urgency.UNHEALTHY


def test_a_taint_without_a_timestamp_only_matches_a_zero_duration_rule() -> None:
    stuck = NodeTaint("example.com/volume-attach-stuck", "NoSchedule")
    timed = NodeTaint(
        "example.com/volume-attach-stuck", "NoSchedule", added=NOW - timedelta(hours=1)
    )
    waiting = policy(rules={"taints": [{"key": "example.com/volume-attach-stuck", "for": "10m"}]})

    selection = _select([node("untimed", taints=(stuck,)), node("timed", taints=(timed,))], waiting)

    assert [c.node for c in selection.candidates] == ["timed"]


def test_drift_selects_nodes_off_the_current_revision() -> None:
    groups = {"workers": GroupView("workers", current_revision="rev2")}
    rotate = policy(rules={"drift": True})

    selection = _select(
        [node("old-rev", revision="rev1"), node("new-rev", revision="rev2")], rotate, groups
    )

    assert [c.node for c in selection.candidates] == ["old-rev"]
    assert selection.candidates[0].reason == "drift: revision rev1 != current rev2"


def test_control_plane_nodes_need_an_explicit_opt_in() -> None:
    control_plane = node("cp", age_hours=100, labels={"node-role.kubernetes.io/control-plane": ""})

    assert _select([control_plane]).candidates == ()
    opted_in = policy(includeControlPlane=True)
    assert [c.node for c in _select([control_plane], opted_in).candidates] == ["cp"]


def test_the_node_selector_limits_what_a_policy_covers() -> None:
    rotate = policy(nodeSelector={"matchLabels": {"molt.dev/instance-group": "data"}})

    selection = _select(
        [node("a", age_hours=60, group="workers"), node("b", age_hours=60, group="data")], rotate
    )

    assert [c.node for c in selection.candidates] == ["b"]


def test_a_malformed_launch_time_is_reported_and_the_node_skipped() -> None:
    bad = node("bad", age_hours=100, annotations={"molt.dev/launched-at": "yesterday"})

    selection = _select([bad, node("good", age_hours=60)])

    assert [c.node for c in selection.candidates] == ["good"]
    assert selection.problems[0].node == "bad"
    assert "not an RFC 3339 time" in selection.problems[0].message


def test_nodes_already_in_the_pipeline_are_not_selected_again() -> None:
    assert _select([node("going", age_hours=60, state="draining")]).candidates == ()


def test_candidates_go_past_deadline_then_unhealthy_then_drifted_then_oldest() -> None:
    groups = {"workers": GroupView("workers", current_revision="rev2")}
    rotate = policy(
        rules={
            "maxAge": "48h",
            "drift": True,
            "conditions": [{"type": "Ready", "status": "Unknown", "for": "5m"}],
        }
    )
    sick = NodeCondition("Ready", "Unknown", NOW - timedelta(hours=1))
    fleet = [
        node("aged-47h", age_hours=47.2, revision="rev2"),
        node("aged-47h30", age_hours=47.5, revision="rev2"),
        node("drifted", age_hours=2, revision="rev1"),
        node("sick", age_hours=3, revision="rev2", conditions=(sick,)),
        node("expired", age_hours=50, revision="rev2"),
    ]

    order = [c.node for c in _select(fleet, rotate, groups).candidates]

    assert order == ["expired", "sick", "drifted", "aged-47h30", "aged-47h"]


def _spread_policy(spread: str = "24h", **spec):  # type: ignore[no-untyped-def]
    spec.setdefault("drain", {"timeout": "1m"})
    return policy(rules={"maxAge": "48h", "maxAgeSpread": spread}, **spec)


def test_max_age_spread_selects_a_cliff_one_gap_at_a_time_and_says_why() -> None:
    # 12 nodes born together 29 h ago; 24 h spread: planned at 26 h, 28 h, ... 48 h.
    cliff = [node(f"n{i:02}", age_hours=29) for i in range(12)]

    selection = _select(cliff, _spread_policy())

    assert [c.node for c in selection.candidates] == ["n10", "n11"]  # planned at 26 h, 28 h
    first = next(c for c in selection.candidates if c.node == "n11")
    assert first.urgency == Urgency.AGED
    assert first.reason == (
        "max-age: 29h > 25h59m (max 48h, leveled by maxAgeSpread to 26h, less drain lead)"
    )
    assert first.deadline == NOW - timedelta(hours=29) + timedelta(hours=48)


def test_a_node_in_the_pipeline_holds_its_place_in_the_plan() -> None:
    # The two earliest are being replaced; the rest keep their plans, so nothing more is due.
    cliff = [
        node(f"n{i:02}", age_hours=27, state="draining" if i >= 10 else None) for i in range(12)
    ]

    assert _select(cliff, _spread_policy()).candidates == ()


def test_each_instance_group_is_leveled_on_its_own() -> None:
    workers = [node(f"w{i:02}", age_hours=29, group="workers") for i in range(12)]
    system = [node(f"s{i}", age_hours=29, group="system") for i in range(2)]

    chosen = {c.node for c in _select(workers + system, _spread_policy()).candidates}

    # Workers: planned 26 h and 28 h are due; system (2 nodes): planned at 36 h and 48 h.
    assert chosen == {"w10", "w11"}


def test_a_leveled_node_past_its_deadline_is_past_its_deadline() -> None:
    cliff = [node(f"n{i:02}", age_hours=49) for i in range(4)]

    selection = _select(cliff, _spread_policy())

    assert {c.urgency for c in selection.candidates} == {Urgency.PAST_DEADLINE}
    assert len(selection.candidates) == 4


def test_a_spread_as_long_as_max_age_leaves_a_steady_rotation_alone() -> None:
    # Each node was replaced when its predecessor started to go, a drain lead (1 h) before
    # the max age: 47 nodes one hour apart is the steady rotation. A spread of the whole max
    # age must not read that as a bunch and pull every plan earlier.
    rotate = _spread_policy("48h", drain={"timeout": "1h"})
    fleet = [node(f"n{i:02}", age_hours=i) for i in range(47)]
    snapshot = Snapshot(tuple(fleet), {})

    dues = {n.name: max_age_due(rotate, n, snapshot, NOW) for n in fleet}

    assert dues == {
        n.name: NOW - timedelta(hours=age) + timedelta(hours=47) for age, n in enumerate(fleet)
    }


def test_the_covered_nodes_are_those_covers_accepts_in_their_order() -> None:
    fleet = [
        node("plain"),
        node("leader", labels={"node-role.kubernetes.io/control-plane": ""}),
        node("data", group="data"),
        node("old-master", labels={"node-role.kubernetes.io/master": ""}, group="data"),
    ]
    for rotate in (
        policy(),
        policy(includeControlPlane=True),
        policy(nodeSelector={}),
        policy(nodeSelector={"matchLabels": {"molt.dev/instance-group": "data"}}),
        policy(
            includeControlPlane=True,
            nodeSelector={"matchLabels": {"molt.dev/instance-group": "data"}},
        ),
    ):
        assert covered_nodes(rotate, fleet) == [n for n in fleet if covers(rotate, n)]
    assert [n.name for n in covered_nodes(policy(), fleet)] == ["plain", "data"]
