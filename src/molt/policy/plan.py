"""Turn a snapshot and the TerminationPolicies into a plan: what goes now, what waits, why.

``compute_plan`` is the one entry point the controller, ``molt plan`` and the simulator
share. It decides; it does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import compress
from operator import attrgetter
from typing import Literal

from molt.api.labels import DO_NOT_DISRUPT
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.budgets import BudgetHold, BudgetLedger
from molt.policy.control_plane import (
    ONE_AT_A_TIME,
    ControlPlaneHold,
    GateInputs,
    RotationState,
    bake_time,
    hold,
    node_failures,
)
from molt.policy.eligibility import EligibilitySchedule
from molt.policy.remediation import Breaker, breaker, record_of, replace_reason
from molt.policy.selection import (
    Candidate,
    NodeProblem,
    Urgency,
    covered_nodes,
    select_candidates,
)
from molt.policy.snapshot import NodeView, Snapshot

Action = Literal["terminate", "wait"]


@dataclass(frozen=True)
class Decision:
    """One node's fate in this plan."""

    candidate: Candidate
    action: Action
    blocked_by: str | None = None
    hold: BudgetHold | None = None
    """The budget that holds it back, when one does."""
    deadlock: str | None = None
    """A PDB that can never allow its drain: the node waits uncordoned, using no budget."""
    paused_by: str | None = None
    """The Watchdog named in the policy's ``pauseWhen`` that holds it: nothing is selected."""
    control_plane: ControlPlaneHold | None = None
    """What holds a control-plane node: another one in flight, a bake, a halt, the gate."""
    remediation: str | None = None
    """Its policy's remediation chain has it (a reboot step, or the breaker pauses it):
    ``Remediating`` or ``RemediationPaused``. It enters the pipeline at a replace step."""

    @property
    def node(self) -> str:
        return self.candidate.node


@dataclass(frozen=True)
class Plan:
    """Decisions in departure order, plus the nodes whose metadata could not be read."""

    decisions: tuple[Decision, ...]
    problems: tuple[NodeProblem, ...]
    breakers: Mapping[str, Breaker] = field(default_factory=dict)
    """Per policy with ``remediation``: unhealthy nodes per group and zone, and where
    remediation is paused."""

    @property
    def admitted(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action == "terminate")

    def decision_for(self, node: str) -> Decision | None:
        return next((d for d in self.decisions if d.node == node), None)


@dataclass(frozen=True)
class Selections:
    """What a plan works out from the snapshot alone, before deadlocks, pauses or gates
    are weighed: every policy's selection in departure order, and each policy's budgets
    with the nodes already in flight counted. A caller that plans again over the same
    snapshot (selection, after it finds a PDB deadlock) works it out once."""

    queue: tuple[Candidate, ...]
    """Each selected node under its most urgent selection, in departure order."""
    problems: tuple[NodeProblem, ...]
    ledgers: Mapping[str, BudgetLedger]
    """Policy -> its budgets before this plan admits anything (copied by each plan)."""
    held: frozenset[str]
    """Nodes annotated do-not-disrupt."""
    control_plane_nodes: frozenset[str]
    control_plane_moving: int
    """Control-plane nodes already in the pipeline."""


def select_all(
    snapshot: Snapshot,
    policies: list[TerminationPolicy],
    now: datetime,
    schedule: EligibilitySchedule | None = None,
) -> Selections:
    """Every node some policy selects, under its most urgent selection (policies in name
    order, so ties go to the first name), and the budgets they are admitted under.
    ``schedule``: as for ``compute_plan``."""
    best: dict[str, Candidate] = {}
    problems: dict[str, NodeProblem] = {}
    ordered = sorted(policies, key=lambda p: p.metadata.name)
    for policy in ordered:
        selection = select_candidates(policy, snapshot, now, schedule)
        for problem in selection.problems:
            problems.setdefault(problem.node, problem)
        for candidate in selection.candidates:
            current = best.get(candidate.node)
            if current is None or candidate.urgency < current.urgency:
                best[candidate.node] = candidate
    ledgers = {
        policy.metadata.name: BudgetLedger(
            list(policy.spec.budgets),
            covered_nodes(policy, snapshot.nodes),
            now,
        )
        for policy in ordered
    }
    control_plane = list(compress(snapshot.nodes, map(_IS_CONTROL_PLANE, snapshot.nodes)))
    return Selections(
        queue=tuple(sorted(best.values(), key=lambda c: (c.urgency, -c.age, c.node))),
        problems=tuple(problems.values()),
        ledgers=ledgers,
        held=frozenset(map(_NAME, compress(snapshot.nodes, map(_HELD, snapshot.nodes)))),
        control_plane_nodes=frozenset(map(_NAME, control_plane)),
        control_plane_moving=sum(map(_IN_PIPELINE, control_plane)),
    )


# Read over every node of the fleet each pass: C-level loops rather than Python ones.
_NAME = attrgetter("name")
_HELD = attrgetter("do_not_disrupt")
_IS_CONTROL_PLANE = attrgetter("is_control_plane")
_IN_PIPELINE = attrgetter("in_pipeline")


def compute_plan(
    snapshot: Snapshot,
    policies: list[TerminationPolicy],
    now: datetime,
    deadlocked: Mapping[str, str] | None = None,
    paused: Mapping[str, str] | None = None,
    control_plane: Mapping[str, GateInputs] | None = None,
    *,
    selections: Selections | None = None,
    schedule: EligibilitySchedule | None = None,
) -> Plan:
    """Select candidates under every policy and admit them while all budgets allow.

    A node selected by several policies is decided once, under its most urgent selection.
    Policies are visited in name order so the plan is deterministic. A node in
    ``deadlocked`` (node name -> the PDB deadlock found on it) waits without using a
    budget, unless it is past its deadline under a policy that deletes pods then. A node
    whose policy is in ``paused`` (policy name -> the Watchdog holding it) waits too, past
    its deadline or not: while a watchdog fails, rotating more nodes adds to the trouble.

    Control-plane nodes go one at a time cluster-wide, whatever the budgets allow, and only
    while their policy is neither baking nor halted and the health gate passes:
    ``control_plane`` (policy name -> its rotation state and the failures of the gate's
    I/O checks) says so; a policy missing from it is judged on its status alone.

    ``selections``: what ``select_all`` returned for this same snapshot, policies and
    time, when the caller has it; otherwise it is worked out here. ``schedule``, kept by
    the caller from pass to pass, lets selection skip nodes whose moment has not come
    (``molt.policy.eligibility``); it changes no decision.
    """
    chosen = selections if selections is not None else select_all(snapshot, policies, now, schedule)
    ordered = sorted(policies, key=lambda p: p.metadata.name)
    ledgers = {name: ledger.copy() for name, ledger in chosen.ledgers.items()}
    held = chosen.held
    by_name = {policy.metadata.name: policy for policy in ordered}
    breakers = {
        policy.metadata.name: breaker(policy, snapshot.nodes)
        for policy in ordered
        if policy.spec.remediation is not None
    }
    nodes = {node.name: node for node in snapshot.nodes} if breakers else {}
    decisions: list[Decision] = []
    paused = paused or {}
    deadlocked = deadlocked or {}
    control_plane_moving = chosen.control_plane_moving
    control_plane_nodes = chosen.control_plane_nodes
    for candidate in chosen.queue:
        chain = breakers.get(candidate.policy)
        if chain is not None and candidate.rule in HEALTH_RULES:
            chained, candidate = _remediation_hold(
                by_name[candidate.policy], chain, candidate, nodes
            )
            if chained is not None:
                decisions.append(chained)
                continue
        holder = paused.get(candidate.policy)
        if holder is not None:
            message = f"paused by watchdog {holder} (pauseWhen): it is failing"
            decisions.append(Decision(candidate, "wait", message, paused_by=holder))
            continue
        deadlock = deadlocked.get(candidate.node)
        if deadlock is not None and not (
            candidate.urgency == Urgency.PAST_DEADLINE
            and by_name[candidate.policy].spec.drain.delete_pods_after_deadline
        ):
            decisions.append(
                Decision(candidate, "wait", f"PDB deadlock: {deadlock}", deadlock=deadlock)
            )
            continue
        if candidate.node in control_plane_nodes:
            gate = (control_plane or {}).get(candidate.policy) or _status_gate(
                by_name[candidate.policy]
            )
            blocker = _control_plane_hold(gate, control_plane_moving, snapshot, candidate, now)
            if blocker is not None:
                decisions.append(
                    Decision(candidate, "wait", blocker.message, control_plane=blocker)
                )
                continue
        ledger = ledgers[candidate.policy]
        budget_hold = ledger.hold(candidate)
        refusal = budget_hold.message if budget_hold is not None else None
        if (
            refusal is None
            and candidate.node in held
            and candidate.urgency != Urgency.PAST_DEADLINE
        ):
            refusal = f"node has {DO_NOT_DISRUPT}=true (held until its deadline)"
        if refusal is None:
            ledger.admit(candidate)
            decisions.append(Decision(candidate, "terminate"))
            if candidate.node in control_plane_nodes:
                control_plane_moving += 1
        else:
            decisions.append(Decision(candidate, "wait", refusal, budget_hold))
    return Plan(tuple(decisions), chosen.problems, breakers)


HEALTH_RULES = ("Condition", "Taint")
"""The rules a remediation chain acts on; the others (age, drift, labels) replace as ever."""


def _remediation_hold(
    policy: TerminationPolicy,
    chain: Breaker,
    candidate: Candidate,
    nodes: Mapping[str, NodeView],
) -> tuple[Decision | None, Candidate]:
    """A node of a policy with ``remediation`` enters the pipeline only once its chain is
    at the replace step, and only where the breaker does not pause remediation; its reason
    then says what the earlier steps did."""
    node = nodes[candidate.node]
    spec = policy.spec.remediation
    assert spec is not None
    record = record_of(node)
    if record is None or record.kind != "replace":
        message = (
            record.describe(len(spec.steps))
            if record is not None
            else "remediation: the chain starts on the remediation controller's next pass"
        )
        return Decision(candidate, "wait", message, remediation="Remediating"), candidate
    held = chain.paused(candidate.group, candidate.zone)
    if held is not None:
        return Decision(candidate, "wait", held, remediation="RemediationPaused"), candidate
    return None, replace(candidate, reason=replace_reason(candidate.reason, record))


def _status_gate(policy: TerminationPolicy) -> GateInputs:
    """A policy's gate as its status tells it, with no I/O check run (``molt plan``)."""
    return GateInputs(RotationState.of(policy), bake_time(policy))


def _control_plane_hold(
    gate: GateInputs, moving: int, snapshot: Snapshot, candidate: Candidate, now: datetime
) -> ControlPlaneHold | None:
    if moving >= 1:
        return ControlPlaneHold("ControlPlaneOneAtATime", ONE_AT_A_TIME)
    failures = [*gate.failures, *node_failures(snapshot, except_node=candidate.node)]
    return hold(gate.state, failures, now, gate.bake)
