"""The remediation chain and the zone-aware breaker, as pure decisions: reboot first where
the provider can, replace when the reboot did not help, keep a node that recovers; pause
remediation in a zone (or a group) where too many nodes are unhealthy at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from molt.api.labels import REMEDIATION_ANNOTATION, STATE_LABEL
from molt.policy.plan import compute_plan
from molt.policy.remediation import (
    MalformedRecordError,
    Record,
    breaker,
    decide,
    read_record,
    record_of,
)
from molt.policy.snapshot import NodeCondition, NodeTaint, NodeView, Snapshot
from molt.policy.why import WhyInputs, explain
from tests.support.fleet import NOW, node, policy

pytestmark = pytest.mark.unit

STEPS = [{"reboot": {"timeout": "10m"}}, {"replace": {}}]


def _healing(**remediation: object) -> object:
    return policy(
        "heal",
        rules={
            "conditions": [{"type": "Ready", "status": "Unknown", "for": "1m"}],
            "taints": [{"key": "example.com/stuck", "effect": "NoSchedule"}],
        },
        remediation={"steps": STEPS, **remediation},
    )


def _sick(
    name: str, zone: str = "zone-a", *, since: timedelta = timedelta(minutes=5), **kw: object
) -> NodeView:
    return node(
        name,
        zone=zone,
        conditions=(NodeCondition("Ready", "Unknown", NOW - since),),
        **kw,  # type: ignore[arg-type]
    )


def _well(name: str, zone: str = "zone-a", **kw: object) -> NodeView:
    return node(name, zone=zone, conditions=(NodeCondition("Ready", "True", NOW),), **kw)  # type: ignore[arg-type]


def _with_record(view: NodeView, record: Record) -> NodeView:
    return view.patched(annotations={REMEDIATION_ANNOTATION: record.to_json()})


# The record.


def test_a_record_round_trips_and_a_malformed_one_is_refused_with_a_reason() -> None:
    record = Record(1, "replace", NOW, cordoned=True, done=("reboot did not help",))
    assert read_record(record.to_json()) == record
    assert read_record(None) is None
    for bad, words in [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"step": -1, "kind": "reboot", "startedAt": "2026-01-01T00:00:00Z"}', "step"),
        ('{"step": 0, "kind": "pray", "startedAt": "2026-01-01T00:00:00Z"}', "unknown kind"),
        ('{"step": 0, "kind": "reboot", "startedAt": "yesterday"}', "RFC 3339"),
        ('{"step": 0, "kind": "reboot"}', "startedAt"),
    ]:
        with pytest.raises(MalformedRecordError, match=words):
            read_record(bad)
    garbled = _sick("n1").patched(annotations={REMEDIATION_ANNOTATION: "{oops"})
    assert record_of(garbled) is None  # read as a fresh start


# The chain.


def test_an_unhealthy_node_is_rebooted_first_and_cordoned_for_it() -> None:
    heal = _healing()
    decision = decide(heal, _sick("n1"), None, can_reboot=True, paused=None, now=NOW)
    assert decision.action == "start"
    assert decision.reboot
    assert decision.cordon
    assert decision.record == Record(0, "reboot", NOW, cordoned=True)
    assert decision.recheck_at == NOW + timedelta(minutes=10)


def test_a_node_not_yet_unhealthy_for_long_enough_waits_for_its_rule() -> None:
    heal = _healing()
    young = _sick("n1", since=timedelta(seconds=20))
    decision = decide(heal, young, None, can_reboot=True, paused=None, now=NOW)
    assert decision.action == "idle"
    assert decision.recheck_at == NOW + timedelta(seconds=40)
    healthy = decide(heal, _well("n2"), None, can_reboot=True, paused=None, now=NOW)
    assert healthy.action == "idle"
    assert healthy.recheck_at is None


def test_a_reboot_the_provider_cannot_do_is_skipped_straight_to_replace() -> None:
    decision = decide(_healing(), _sick("n1"), None, can_reboot=False, paused=None, now=NOW)
    assert decision.action == "start"
    assert not decision.reboot
    assert not decision.cordon
    assert decision.record is not None
    assert decision.record.kind == "replace"
    assert decision.record.step == 1
    assert "cannot reboot" in decision.skipped[0]
    assert "cannot reboot" in decision.record.done[0]


def test_a_ready_node_is_never_rebooted_its_pods_are_drained_by_replace_instead() -> None:
    # Tainted (say, a volume stuck) but Ready: its pods still serve, and a reboot would take
    # them down outside their PodDisruptionBudgets.
    stuck = (NodeTaint("example.com/stuck", "NoSchedule"),)
    decision = decide(
        _healing(), _well("n1", taints=stuck), None, can_reboot=True, paused=None, now=NOW
    )
    assert decision.action == "start"
    assert not decision.reboot
    assert not decision.cordon
    assert decision.record is not None
    assert decision.record.kind == "replace"
    assert "node is Ready" in decision.skipped[0]


def test_a_rebooting_node_waits_out_its_timeout_then_goes_to_the_next_step() -> None:
    heal = _healing()
    started = Record(0, "reboot", NOW - timedelta(minutes=4), cordoned=True)
    sick = _with_record(_sick("n1"), started)
    waiting = decide(heal, sick, started, can_reboot=True, paused=None, now=NOW)
    assert waiting.action == "wait"
    assert waiting.recheck_at == started.started_at + timedelta(minutes=10)

    later = NOW + timedelta(minutes=7)
    moved = decide(heal, sick, started, can_reboot=True, paused=None, now=later)
    assert moved.action == "start"
    assert moved.record is not None
    assert (moved.record.step, moved.record.kind, moved.record.cordoned) == (1, "replace", True)
    assert "did not help within 10m" in moved.record.done[0]
    assert moved.finished is not None
    assert "did not help" in moved.finished


def test_a_node_ready_and_healthy_again_is_kept_and_uncordoned_if_molt_cordoned_it() -> None:
    heal = _healing()
    started = Record(0, "reboot", NOW - timedelta(minutes=2), cordoned=True)
    back = _with_record(_well("n1"), started)
    decision = decide(heal, back, started, can_reboot=True, paused=None, now=NOW)
    assert decision.action == "recovered"
    assert decision.uncordon
    unmarked = Record(0, "reboot", NOW - timedelta(minutes=2), cordoned=False)
    assert not decide(heal, back, unmarked, can_reboot=True, paused=None, now=NOW).uncordon
    # Ready again but still tainted: not recovered.
    stuck = (NodeTaint("example.com/stuck", "NoSchedule"),)
    tainted = _with_record(_well("n1", taints=stuck), started)
    assert decide(heal, tainted, started, can_reboot=True, paused=None, now=NOW).action == "wait"


def test_a_chain_without_replace_keeps_the_node_once_every_step_was_tried() -> None:
    reboots = policy(
        "reboots",
        rules={"conditions": [{"type": "Ready", "status": "Unknown"}]},
        remediation={"steps": [{"reboot": {"timeout": "5m"}}]},
    )
    started = Record(0, "reboot", NOW - timedelta(minutes=6))
    decision = decide(reboots, _sick("n1"), started, can_reboot=True, paused=None, now=NOW)
    assert decision.record is not None
    assert decision.record.kind == "exhausted"
    after = decide(reboots, _sick("n1"), decision.record, can_reboot=True, paused=None, now=NOW)
    assert after.action == "wait"


def test_the_pipeline_owns_a_node_in_it() -> None:
    moving = _sick("n1", labels={STATE_LABEL: "draining"})
    assert decide(_healing(), moving, None, can_reboot=True, paused=None, now=NOW).action == "idle"


def test_a_paused_zone_starts_no_step_and_escalates_no_reboot() -> None:
    heal = _healing()
    held = decide(heal, _sick("n1"), None, can_reboot=True, paused="too many", now=NOW)
    assert held.action == "hold"
    started = Record(0, "reboot", NOW - timedelta(minutes=20))
    late = decide(heal, _sick("n1"), started, can_reboot=True, paused="too many", now=NOW)
    assert late.action == "hold"


@given(
    steps=st.lists(st.sampled_from(["reboot", "replace"]), min_size=1, max_size=5).map(
        lambda kinds: (
            [k for k in kinds if k == "reboot"] + (["replace"] if "replace" in kinds else [])
        )
    ),
    can_reboot=st.booleans(),
    minutes=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=12),
)
def test_the_chain_only_moves_forward_and_ends_at_replace_or_exhausted(
    steps: list[str], can_reboot: bool, minutes: list[int]
) -> None:
    """Whatever the provider can do and however time passes, a node that stays sick goes
    through the steps in order, never back, and ends at replace (or exhausted)."""
    heal = policy(
        "p",
        rules={"conditions": [{"type": "Ready", "status": "Unknown"}]},
        remediation={"steps": [{k: {"timeout": "5m"} if k == "reboot" else {}} for k in steps]},
    )
    sick = _sick("n1")
    record: Record | None = None
    now = NOW
    for step in minutes:
        now += timedelta(minutes=step)
        decision = decide(heal, sick, record, can_reboot=can_reboot, paused=None, now=now)
        if decision.action == "start":
            assert decision.record is not None
            assert record is None or decision.record.step > record.step
            assert decision.reboot == (decision.record.kind == "reboot")
            assert not decision.reboot or can_reboot
            record = decision.record
    for _ in range(len(steps) + 1):
        now += timedelta(minutes=6)
        decision = decide(heal, sick, record, can_reboot=can_reboot, paused=None, now=now)
        if decision.record is not None:
            record = decision.record
    assert record is not None
    assert record.kind == ("replace" if "replace" in steps else "exhausted")


# The breaker.


def _zones(
    sick_a: int, total_a: int, sick_b: int, total_b: int, total_c: int = 0
) -> list[NodeView]:
    nodes: list[NodeView] = []
    for zone, sick, total in (
        ("zone-a", sick_a, total_a),
        ("zone-b", sick_b, total_b),
        ("zone-c", 0, total_c),
    ):
        for index in range(total):
            name = f"{zone}-{index}"
            nodes.append(_sick(name, zone) if index < sick else _well(name, zone))
    return nodes


def test_three_of_four_unhealthy_in_zone_b_pause_zone_b_only() -> None:
    heal = _healing()  # group 40%, zone 50% by default
    nodes = _zones(1, 4, 3, 4, total_c=4)  # 4 of 12 unhealthy: the group is under 40%
    state = breaker(heal, nodes)
    assert state.paused("workers", "zone-a") is None
    held = state.paused("workers", "zone-b")
    assert held is not None
    assert "3 of 4 nodes unhealthy in zone zone-b" in held
    assert [t.zone for t in state.tripped()] == ["zone-b"]

    plan = compute_plan(Snapshot(tuple(nodes)), [heal], NOW)
    assert plan.admitted == ()  # nobody replaced yet: the chain starts with a reboot
    assert plan.breakers["heal"].paused("workers", "zone-b") is not None
    # In zone-a the chain runs; in zone-b nothing starts.
    a = decide(
        heal, nodes[0], None, can_reboot=True, paused=state.paused("workers", "zone-a"), now=NOW
    )
    b = decide(
        heal, nodes[4], None, can_reboot=True, paused=state.paused("workers", "zone-b"), now=NOW
    )
    assert a.action == "start"
    assert a.reboot
    assert b.action == "hold"


def test_the_pause_lifts_when_zone_b_recovers() -> None:
    heal = _healing()
    recovered = _zones(1, 4, 1, 4, total_c=4)
    state = breaker(heal, recovered)
    assert state.tripped() == []
    assert state.paused("workers", "zone-b") is None


def test_above_the_group_limit_every_zone_pauses() -> None:
    heal = _healing()
    nodes = _zones(2, 4, 2, 4, total_c=4)  # 4 of 12: at most 5 (40% rounded up) allowed
    assert breaker(heal, nodes).tripped() == []
    nodes = _zones(2, 4, 2, 4, total_c=2)  # 4 of 10: 4 allowed, still not above
    assert breaker(heal, nodes).tripped() == []
    worse = _zones(2, 4, 2, 4, total_c=1)  # 4 of 9: 4 allowed (3.6 rounded up)
    assert breaker(heal, worse).tripped() == []
    worst = _zones(2, 3, 2, 3, total_c=3)  # 4 of 9 too, but: zones at 2 of 3 (2 allowed)
    assert breaker(heal, worst).tripped() == []
    tight = _healing(maxUnhealthy={"group": "30%", "zone": "100%"})
    state = breaker(tight, worst)  # 4 of 9 above 30% (3 allowed)
    assert [(t.group, t.zone) for t in state.tripped()] == [("workers", None)]
    for zone in ("zone-a", "zone-b", "zone-c"):
        held = state.paused("workers", zone)
        assert held is not None
        assert "group workers" in held
    assert all(state.zone_paused().values())


def test_counts_work_as_limits_and_other_groups_are_counted_apart() -> None:
    heal = _healing(maxUnhealthy={"group": 1, "zone": 1})
    nodes = [
        _sick("a", "zone-a"),
        _sick("b", "zone-b"),
        _sick("c", "zone-a", group="other"),
        _well("d", "zone-a", group="other"),
    ]
    state = breaker(heal, nodes)
    assert state.paused("workers", "zone-a") is not None  # 2 of workers' nodes > 1
    assert state.paused("other", "zone-a") is None


def test_the_breaker_counts_a_node_before_its_rule_has_held_for_long_enough() -> None:
    heal = _healing()
    fresh = [_sick(f"b{i}", "zone-b", since=timedelta(seconds=1)) for i in range(3)]
    state = breaker(heal, [*fresh, _well("b3", "zone-b")])
    assert state.paused("workers", "zone-b") is not None


# The plan: a remediation policy's unhealthy nodes enter the pipeline at the replace step.


def test_the_plan_admits_a_node_only_at_its_replace_step_with_the_earlier_steps_in_its_reason() -> (
    None
):
    heal = _healing()
    rebooting = _with_record(_sick("n1"), Record(0, "reboot", NOW))
    replacing = _with_record(
        _sick("n2"), Record(1, "replace", NOW, done=("reboot at X did not help within 10m",))
    )
    nodes = (rebooting, replacing, *[_well(f"w{i}") for i in range(6)])
    plan = compute_plan(Snapshot(nodes), [heal], NOW)
    assert [d.node for d in plan.admitted] == ["n2"]
    assert "did not help within 10m" in plan.admitted[0].candidate.reason
    waiting = plan.decision_for("n1")
    assert waiting is not None
    assert waiting.remediation == "Remediating"
    answer = explain(WhyInputs(rebooting, Snapshot(nodes), [heal], plan, NOW))
    assert answer.blocker == "Remediating"


def test_the_plan_holds_a_replace_step_where_the_breaker_pauses() -> None:
    heal = _healing()
    record = Record(1, "replace", NOW)
    nodes = [
        _with_record(n, record) if n.name.startswith("zone-b") else n for n in _zones(0, 4, 3, 4, 4)
    ]
    plan = compute_plan(Snapshot(tuple(nodes)), [heal], NOW)
    assert plan.admitted == ()
    held = plan.decision_for("zone-b-0")
    assert held is not None
    assert held.remediation == "RemediationPaused"


def test_age_drift_and_other_policies_are_untouched_by_remediation() -> None:
    heal = policy(
        "heal",
        nodeSelector={"matchExpressions": [{"key": "pool", "operator": "DoesNotExist"}]},
        rules={"maxAge": "48h", "conditions": [{"type": "Ready", "status": "Unknown"}]},
        remediation={"steps": STEPS},
    )
    plain = policy(
        "plain",
        nodeSelector={"matchLabels": {"pool": "plain"}},
        rules={"conditions": [{"type": "Ready", "status": "Unknown"}]},
    )
    old = _well("old", age_hours=60)
    sick_plain = _sick("sick-plain", labels={"pool": "plain"})
    plan = compute_plan(
        Snapshot((old, sick_plain, *[_well(f"w{i}") for i in range(8)])), [heal, plain], NOW
    )
    assert {d.node for d in plan.admitted} == {"old", "sick-plain"}
