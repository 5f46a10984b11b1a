"""Control-plane rotation: one node at a time whatever the budgets, a bake after each
node, a halt when the health gate fails during the bake, and the resume rule (the gate
passing for a whole bakeTime); the reconciler's Halted condition and Event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from molt.api.labels import DRAINING, STATE_LABEL
from molt.api.terminationpolicy import TerminationPolicy
from molt.controllers.termination.selection import SelectionReconciler
from molt.observe.metrics import Metrics
from molt.policy.age import format_rfc3339
from molt.policy.control_plane import GateInputs, RotationState, advance, hold
from molt.policy.plan import compute_plan
from molt.policy.snapshot import NodeCondition, NodeView, Snapshot
from molt.policy.why import WhyInputs, explain
from tests.support.fake_ports import FakeClock, FakeCluster
from tests.support.fleet import NOW, node, policy

CONTROL_PLANE = {"node-role.kubernetes.io/control-plane": ""}
READY = (NodeCondition("Ready", "True"),)
NOT_READY = (NodeCondition("Ready", "False"),)
BAKE = timedelta(minutes=10)


def _cp(name: str, *, state: str | None = None, ready: bool = True) -> NodeView:
    return node(
        name,
        age_hours=60,
        labels={**CONTROL_PLANE, **({STATE_LABEL: state} if state else {})},
        state=state,
        conditions=READY if ready else NOT_READY,
    )


def _policy(**spec: Any) -> TerminationPolicy:
    return policy("cp", includeControlPlane=True, budgets=[{"maxInFlight": 3}], **spec)


def test_one_control_plane_node_at_a_time_whatever_the_budgets_allow() -> None:
    snapshot = Snapshot((_cp("cp-0"), _cp("cp-1"), _cp("cp-2"), node("w-0", age_hours=60)), {})

    plan = compute_plan(snapshot, [_policy()], NOW)

    admitted = [d.node for d in plan.admitted]
    assert [n for n in admitted if n.startswith("cp-")] == ["cp-0"]
    assert "w-0" in admitted, "a worker still goes under the budget"
    for name in ("cp-1", "cp-2"):
        decision = plan.decision_for(name)
        assert decision is not None
        assert decision.control_plane is not None
        assert decision.control_plane.code == "ControlPlaneOneAtATime"
        assert decision.blocked_by == "control plane: one node at a time"


def test_a_control_plane_node_in_the_pipeline_holds_the_rest() -> None:
    snapshot = Snapshot((_cp("cp-0", state=DRAINING), _cp("cp-1"), _cp("cp-2")), {})

    plan = compute_plan(snapshot, [_policy()], NOW)

    assert plan.admitted == ()
    answer = explain(WhyInputs(snapshot.nodes[1], snapshot, [_policy()], plan, NOW))
    assert answer.blocker == "ControlPlaneOneAtATime"


def test_the_next_node_waits_out_the_bake_and_why_gives_its_end() -> None:
    finished = NOW - timedelta(minutes=4)
    state = RotationState(last_completed=finished)
    snapshot = Snapshot((_cp("cp-1"), _cp("cp-2")), {})
    tp = _policy()

    baking = compute_plan(snapshot, [tp], NOW, control_plane={"cp": GateInputs(state, BAKE)})
    done = compute_plan(
        snapshot, [tp], finished + BAKE, control_plane={"cp": GateInputs(state, BAKE)}
    )

    assert baking.admitted == ()
    answer = explain(WhyInputs(snapshot.nodes[0], snapshot, [tp], baking, NOW))
    assert answer.blocker == "ControlPlaneBaking"
    assert answer.eta == finished + BAKE
    assert [d.node for d in done.admitted] == ["cp-1"]


def test_the_gate_must_pass_to_admit_and_another_unready_node_fails_it() -> None:
    snapshot = Snapshot((_cp("cp-0"), _cp("cp-1", ready=False)), {})
    gate = GateInputs(RotationState(), BAKE, ("https://etcd-0:2379/health answered 503",))

    failing = compute_plan(snapshot, [_policy()], NOW, control_plane={"cp": gate})
    nodes_only = compute_plan(
        snapshot, [_policy()], NOW, control_plane={"cp": GateInputs(RotationState(), BAKE)}
    )

    first = failing.decision_for("cp-0")
    assert first is not None
    assert first.control_plane is not None
    assert first.control_plane.code == "ControlPlaneGateFailing"
    assert "etcd-0" in first.control_plane.message
    assert "node cp-1 not Ready" in first.control_plane.message
    # Only *other* nodes' readiness counts: the unready node itself may be replaced.
    assert [d.node for d in nodes_only.admitted] == ["cp-1"]


def test_a_failure_during_the_bake_halts_and_outside_a_bake_only_holds() -> None:
    baking = RotationState(last_completed=NOW - timedelta(minutes=1))
    idle = RotationState(last_completed=NOW - timedelta(hours=1))

    halted = advance(baking, ["https://etcd-0:2379/health answered 500"], NOW, BAKE)
    not_halted = advance(idle, ["https://etcd-0:2379/health answered 500"], NOW, BAKE)

    assert halted.halted is not None
    assert "etcd-0" in halted.halted
    assert not_halted.halted is None
    blocker = hold(halted, [], NOW + BAKE, BAKE)
    assert blocker is not None
    assert blocker.code == "ControlPlaneHalted", "the bake is over; the halt holds"


def test_a_halt_ends_only_after_the_gate_passed_for_a_whole_bake_without_a_break() -> None:
    state = advance(
        RotationState(last_completed=NOW - timedelta(minutes=1)), ["x answered 500"], NOW, BAKE
    )
    start = NOW + timedelta(minutes=1)

    state = advance(state, [], start, BAKE)
    assert state.halted is not None
    assert state.healthy_since == start
    state = advance(state, ["x answered 500"], start + timedelta(minutes=5), BAKE)
    assert state.halted is not None
    assert state.healthy_since is None, "a break restarts the count"
    again = start + timedelta(minutes=6)
    state = advance(state, [], again, BAKE)
    blocker = hold(state, [], again, BAKE)
    assert blocker is not None
    assert blocker.until == again + BAKE
    state = advance(state, [], again + BAKE - timedelta(seconds=1), BAKE)
    assert state.halted is not None
    state = advance(state, [], again + BAKE, BAKE)
    assert state.halted is None
    assert hold(state, [], again + BAKE, BAKE) is None


class _Probe:
    def __init__(self) -> None:
        self.failing: list[str] = []

    async def failures(self, urls: Any) -> list[str]:
        return list(self.failing)


async def test_selection_halts_with_a_condition_and_one_event_and_resumes() -> None:
    clock = FakeClock(NOW)
    finished = format_rfc3339(NOW - timedelta(seconds=30))
    tp = TerminationPolicy.model_validate(
        {
            **policy(
                "cp",
                includeControlPlane=True,
                controlPlane={"bakeTime": "10m", "healthChecks": ["http://etcd:2379/health"]},
            ).model_dump(by_alias=True, exclude_none=True),
            "status": {"controlPlane": {"lastCompleted": finished}},
        }
    )
    cluster = FakeCluster(nodes=[_cp("cp-1"), _cp("cp-2")], policies=[tp])
    probe = _Probe()
    selection = SelectionReconciler(cluster, cluster, clock, Metrics(), probe=probe)

    probe.failing = ["http://etcd:2379/health answered 500"]
    await selection.reconcile()
    clock.advance(5)
    await selection.reconcile()

    _, status = cluster.policy_status_patches[-1]
    halted = next(c for c in status["conditions"] if c["type"] == "Halted")
    assert halted["status"] == "True"
    assert halted["reason"] == "HealthGateFailed"
    assert "http://etcd:2379/health answered 500" in halted["message"]
    assert status["controlPlane"]["halted"]
    events = [e for e in cluster.events if e.reason == "ControlPlaneHalted"]
    assert len(events) == 1

    probe.failing = []
    clock.advance(15 * 60)  # the bake is long over: the halt alone holds
    await selection.reconcile()
    assert not cluster.node_patches, "selected before the gate passed for a whole bakeTime"
    clock.advance(10 * 60)
    await selection.reconcile()

    assert [name for name, _ in cluster.node_patches] == ["cp-1"]
    _, status = cluster.policy_status_patches[-1]
    halted = next(c for c in status["conditions"] if c["type"] == "Halted")
    assert halted["status"] == "False"
    assert [e.reason for e in cluster.events if e.node == "policy/cp"] == [
        "ControlPlaneHalted",
        "ControlPlaneResumed",
    ]
