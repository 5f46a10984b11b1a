"""Turn a snapshot and the TerminationPolicies into a plan: what goes now, what waits, why.

``compute_plan`` is the one entry point the controller, ``molt plan`` and the simulator
share. It decides; it does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from molt.api.labels import DO_NOT_DISRUPT
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.budgets import BudgetLedger
from molt.policy.selection import Candidate, NodeProblem, Urgency, covers, select_candidates
from molt.policy.snapshot import Snapshot

Action = Literal["terminate", "wait"]


@dataclass(frozen=True)
class Decision:
    """One node's fate in this plan."""

    candidate: Candidate
    action: Action
    blocked_by: str | None = None

    @property
    def node(self) -> str:
        return self.candidate.node


@dataclass(frozen=True)
class Plan:
    """Decisions in departure order, plus the nodes whose metadata could not be read."""

    decisions: tuple[Decision, ...]
    problems: tuple[NodeProblem, ...]

    @property
    def admitted(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.action == "terminate")


def compute_plan(snapshot: Snapshot, policies: list[TerminationPolicy], now: datetime) -> Plan:
    """Select candidates under every policy and admit them while all budgets allow.

    A node selected by several policies is decided once, under its most urgent selection.
    Policies are visited in name order so the plan is deterministic.
    """
    best: dict[str, Candidate] = {}
    problems: dict[str, NodeProblem] = {}
    ordered = sorted(policies, key=lambda p: p.metadata.name)
    for policy in ordered:
        selection = select_candidates(policy, snapshot, now)
        for problem in selection.problems:
            problems.setdefault(problem.node, problem)
        for candidate in selection.candidates:
            current = best.get(candidate.node)
            if current is None or candidate.urgency < current.urgency:
                best[candidate.node] = candidate

    ledgers = {
        policy.metadata.name: BudgetLedger(
            list(policy.spec.budgets),
            [node for node in snapshot.nodes if covers(policy, node)],
            now,
        )
        for policy in ordered
    }
    held = {node.name for node in snapshot.nodes if node.do_not_disrupt}
    queue = sorted(best.values(), key=lambda c: (c.urgency, -c.age, c.node))
    decisions: list[Decision] = []
    for candidate in queue:
        ledger = ledgers[candidate.policy]
        refusal = ledger.refusal(candidate)
        if (
            refusal is None
            and candidate.node in held
            and candidate.urgency != Urgency.PAST_DEADLINE
        ):
            refusal = f"node has {DO_NOT_DISRUPT}=true (held until its deadline)"
        if refusal is None:
            ledger.admit(candidate)
            decisions.append(Decision(candidate, "terminate"))
        else:
            decisions.append(Decision(candidate, "wait", refusal))
    return Plan(tuple(decisions), tuple(problems.values()))
