"""Why a node is (or is not) being replaced, what holds it now, and when it will move.

Pure: the caller gathers the cluster (a snapshot, the policies, the plan, the node's pods
and the PDBs, its group's cells, the median rotation time seen lately) and this module
puts it in plain words and in a stable shape for ``-o json``. One question, one answer:
the first thing that holds the node, in pipeline order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from molt.api.durations import format_duration
from molt.api.labels import (
    BLOCKED_ANNOTATION,
    DEADLINE_ANNOTATION,
    DEREGISTERED_AT_ANNOTATION,
    DEREGISTRATION_BLOCKED,
    DEREGISTRATION_WAIT_ANNOTATION,
    DRAINED_AT_ANNOTATION,
    DRAINING,
    POLICY_ANNOTATION,
    REASON_ANNOTATION,
    REPLACEMENT_ANNOTATION,
    SELECTED,
    SELECTED_AT_ANNOTATION,
    TERMINATING,
)
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.age import MalformedLaunchTimeError, format_rfc3339, parse_rfc3339_or_none
from molt.policy.budgets import next_window_opening, scope_key
from molt.policy.pdbs import PdbView, find_deadlocks, refusing_now
from molt.policy.plan import Decision, Plan
from molt.policy.selection import covers, matches_selector, max_age_due
from molt.policy.snapshot import NodeView, PodView, Snapshot


@dataclass(frozen=True)
class ActionFacts:
    """One lifecycle action's progress on the node, as recorded there."""

    key: str
    """``<hook>/<ig|tp>/<name>``."""
    state: str
    attempts: int
    error: str | None = None
    retry_at: str | None = None


@dataclass(frozen=True)
class CellFacts:
    """One cell of the node's group, from the group's status."""

    zone: str
    capacity_type: str
    revision: str
    desired: int
    ready: int
    available: bool = True
    unavailable_until: str | None = None

    @property
    def label(self) -> str:
        return f"{self.zone}/{self.capacity_type}/{self.revision}"


@dataclass(frozen=True)
class WhyInputs:
    """Everything one answer is computed from."""

    node: NodeView
    snapshot: Snapshot
    policies: list[TerminationPolicy]
    plan: Plan
    now: datetime
    pods: list[PodView] = field(default_factory=list)
    pdbs: list[PdbView] = field(default_factory=list)
    rotation_median: timedelta | None = None
    """The median time from selection to a terminated node, over recent rotations."""
    actions: list[ActionFacts] = field(default_factory=list)
    cells: list[CellFacts] = field(default_factory=list)
    group_ready_timeout: timedelta | None = None


@dataclass(frozen=True)
class Explanation:
    """The answer: selection, the blocker, the next step and an ETA."""

    node: str
    state: str
    """``running`` (not selected), ``waiting`` (selected, not admitted yet), or the
    pipeline state label: ``selected``, ``draining``, ``terminating``."""
    blocker: str
    """A stable code: NoPolicy, ControlPlaneExcluded, InvalidMetadata, NoRule, TooYoung,
    PausedByWatchdog, Remediating, RemediationPaused, PdbDeadlock, ControlPlaneOneAtATime,
    ControlPlaneHalted, ControlPlaneBaking, ControlPlaneGateFailing, DoNotDisrupt, WindowClosed,
    BudgetFull, Admitted, WaitingForCapacity, DeregistrationFailed, ActionRunning, ActionFailed,
    LoadBalancersDraining, PdbAllowsZero, DrainBlocked, Draining, Terminating."""
    message: str
    next_step: str
    policy: str | None = None
    rule: str | None = None
    reason: str | None = None
    eta: datetime | None = None
    eta_basis: str | None = None
    since: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "state": self.state,
            "selected": self.state != "running",
            "policy": self.policy,
            "rule": self.rule,
            "reason": self.reason,
            "blocker": self.blocker,
            "message": self.message,
            "since": format_rfc3339(self.since) if self.since else None,
            "nextStep": self.next_step,
            "eta": format_rfc3339(self.eta) if self.eta else None,
            "etaBasis": self.eta_basis,
            "details": self.details,
            "warnings": self.warnings,
        }


def explain(inputs: WhyInputs) -> Explanation:
    """The first thing that holds the node, in pipeline order, with an ETA if one can be
    computed."""
    node = inputs.node
    warnings = [d.message for d in find_deadlocks(inputs.pods, inputs.pdbs)]
    if node.in_pipeline:
        return _in_pipeline(inputs)
    decision = inputs.plan.decision_for(node.name)
    if decision is None:
        return _not_selected(inputs, warnings)
    return _waiting(inputs, decision, warnings)


# Not selected.


def _not_selected(inputs: WhyInputs, warnings: list[str]) -> Explanation:
    node, now = inputs.node, inputs.now
    covering = [p for p in inputs.policies if covers(p, node)]
    if not covering:
        excluded = [
            p.metadata.name
            for p in inputs.policies
            if node.is_control_plane
            and not p.spec.include_control_plane
            and matches_selector(node.labels, p.spec.node_selector)
        ]
        if excluded:
            return _answer(
                inputs,
                "ControlPlaneExcluded",
                f"not selected: a control-plane node, and policy {', '.join(excluded)} "
                "does not opt in (includeControlPlane: false)",
                "none: set includeControlPlane: true on the policy to rotate it",
                warnings=warnings,
            )
        return _answer(
            inputs,
            "NoPolicy",
            "not selected: no TerminationPolicy covers it (no nodeSelector matches its labels)",
            "none until a policy covers it",
            warnings=warnings,
        )
    problem = next((p for p in inputs.plan.problems if p.node == node.name), None)
    if problem is not None:
        return _answer(
            inputs,
            "InvalidMetadata",
            f"not selected: {problem.message}",
            "fix the annotation; the node is skipped until then",
            warnings=warnings,
        )
    due: list[tuple[datetime, str]] = []
    for policy in covering:
        try:
            when = max_age_due(policy, node, inputs.snapshot, now)
        except MalformedLaunchTimeError as error:  # also reported as a plan problem
            return _answer(inputs, "InvalidMetadata", f"not selected: {error}", "fix it")
        if when is not None:
            due.append((when, policy.metadata.name))
    if not due:
        return _answer(
            inputs,
            "NoRule",
            f"not selected: no rule of {', '.join(p.metadata.name for p in covering)} "
            "matches it, and none has a max age",
            "none until a rule matches",
            warnings=warnings,
        )
    when, policy_name = min(due)
    spread = next(p.spec.rules.max_age_spread for p in covering if p.metadata.name == policy_name)
    shortened_by = f"maxAgeSpread {spread} leveling" if spread else "jitter"
    return _answer(
        inputs,
        "TooYoung",
        f"not selected: too young until {format_rfc3339(when)} "
        f"(policy {policy_name}'s max age, less {shortened_by} and drain lead; "
        f"in {format_duration(max(when - now, timedelta(0)))})",
        "selection by max age",
        policy=policy_name,
        eta=when,
        eta_basis="when its age reaches the policy's start age",
        warnings=warnings,
    )


# Selected by the plan, not in the pipeline yet.

_CONTROL_PLANE_NEXT = {
    "ControlPlaneOneAtATime": "enter the pipeline once the control-plane node in flight is gone "
    "and its bake is over",
    "ControlPlaneBaking": "enter the pipeline when the bake ends, if the health gate passes",
    "ControlPlaneHalted": "none until the health gate has passed for a whole bakeTime",
    "ControlPlaneGateFailing": "enter the pipeline once the health gate passes",
}


def _waiting(inputs: WhyInputs, decision: Decision, warnings: list[str]) -> Explanation:
    candidate = decision.candidate
    common: dict[str, Any] = {
        "policy": candidate.policy,
        "rule": candidate.rule,
        "reason": candidate.reason,
        "warnings": warnings,
    }
    if decision.paused_by is not None:
        return _answer(
            inputs,
            "PausedByWatchdog",
            f"selected ({candidate.reason}) but the policy is paused: watchdog "
            f"{decision.paused_by} (in its pauseWhen) is failing",
            "enter the pipeline once the watchdog recovers",
            details={"watchdog": decision.paused_by},
            eta_basis="none until the watchdog recovers",
            **common,
        )
    if decision.remediation is not None:
        return _answer(
            inputs,
            decision.remediation,
            f"selected ({candidate.reason}) but in its remediation chain: {decision.blocked_by}",
            "enter the pipeline at the chain's replace step, or be kept if it recovers"
            if decision.remediation == "Remediating"
            else "none until fewer nodes are unhealthy there (maxUnhealthy)",
            eta_basis=None,
            **common,
        )
    if decision.deadlock is not None:
        deadlocks = find_deadlocks(inputs.pods, inputs.pdbs)
        return _answer(
            inputs,
            "PdbDeadlock",
            f"selected ({candidate.reason}) but held before cordoning: {decision.deadlock}",
            "none until the PDB or its workload changes (scale it up, or relax the PDB)",
            details={"pdbs": sorted({d.pdb for d in deadlocks})},
            eta_basis="never on its own: no eviction can succeed",
            **{**common, "warnings": []},
        )
    if decision.control_plane is not None:
        held = decision.control_plane
        return _answer(
            inputs,
            held.code,
            f"selected ({candidate.reason}) but waiting: {held.message}",
            _CONTROL_PLANE_NEXT[held.code],
            eta=held.until,
            eta_basis=(
                "the bake's end (the health gate must pass then)"
                if held.code == "ControlPlaneBaking"
                else "the halt's earliest end, if the health gate keeps passing"
                if held.until
                else None
            ),
            **common,
        )
    if decision.action == "terminate":
        return _answer(
            inputs,
            "Admitted",
            f"selected ({candidate.reason}); the budget has room: it enters the pipeline "
            "on the controller's next pass",
            "cordon, once its group has a Ready replacement",
            eta=inputs.now,
            eta_basis="now",
            **common,
        )
    hold = decision.hold
    if hold is not None and hold.window_closed:
        opens = next_window_opening(hold.budget, inputs.now)
        return _answer(
            inputs,
            "WindowClosed",
            f"selected ({candidate.reason}) but waiting: the maintenance window is closed "
            f"({decision.blocked_by}); it opens at {format_rfc3339(opens) if opens else '?'}",
            "enter the pipeline when the window opens",
            eta=opens,
            eta_basis="the window's next opening (the budget may still hold it then)",
            details={"schedule": hold.budget.schedule, "duration": hold.budget.duration},
            **common,
        )
    if hold is not None:
        users = _budget_users(inputs, candidate.policy, hold.scope)
        ahead = _ahead_in_queue(inputs.plan, decision, hold.scope)
        eta, basis = _queue_eta(inputs, ahead, hold.allowed)
        return _answer(
            inputs,
            "BudgetFull",
            f"selected ({candidate.reason}) but waiting: {decision.blocked_by}; "
            f"in flight: {', '.join(users) or 'none'}; {ahead} node(s) ahead of it",
            "enter the pipeline when a node in flight finishes",
            eta=eta,
            eta_basis=basis,
            details={
                "scope": hold.scope,
                "inFlight": hold.in_flight,
                "allowed": hold.allowed,
                "nodesInFlight": users,
                "ahead": ahead,
                "medianRotationSeconds": (
                    round(inputs.rotation_median.total_seconds(), 1)
                    if inputs.rotation_median
                    else None
                ),
            },
            **common,
        )
    return _answer(
        inputs,
        "DoNotDisrupt",
        f"selected ({candidate.reason}) but waiting: {decision.blocked_by}",
        "enter the pipeline at its deadline, or when the annotation goes",
        eta=candidate.deadline,
        eta_basis="its deadline" if candidate.deadline else None,
        **common,
    )


def _budget_users(inputs: WhyInputs, policy_name: str, scope: str) -> list[str]:
    policy = next(p for p in inputs.policies if p.metadata.name == policy_name)
    budgets = policy.spec.budgets or []
    found: list[str] = []
    for node in inputs.snapshot.nodes:
        if not node.in_pipeline or not covers(policy, node):
            continue
        keys = {scope_key(b, node.group, node.zone) for b in budgets} or {"cluster"}
        if scope in keys:
            found.append(node.name)
    return sorted(found)


def _ahead_in_queue(plan: Plan, decision: Decision, scope: str) -> int:
    ahead = 0
    for other in plan.decisions:
        if other is decision:
            break
        same_scope = other.hold is not None and other.hold.scope == scope
        if other.candidate.policy == decision.candidate.policy and same_scope:
            ahead += 1
    return ahead


def _queue_eta(inputs: WhyInputs, ahead: int, allowed: int) -> tuple[datetime | None, str]:
    median = inputs.rotation_median
    if median is None:
        return None, "no rotation finished lately to measure"
    waves = math.ceil((ahead + 1) / max(allowed, 1))
    return inputs.now + median * waves, (
        f"{ahead} ahead, {allowed} at a time, x median rotation {format_duration(median)}"
    )


# In the pipeline.


def _in_pipeline(inputs: WhyInputs) -> Explanation:
    node, now = inputs.node, inputs.now
    annotations = node.annotations
    common: dict[str, Any] = {
        "policy": annotations.get(POLICY_ANNOTATION),
        "reason": annotations.get(REASON_ANNOTATION),
        "since": parse_rfc3339_or_none(annotations.get(SELECTED_AT_ANNOTATION)),
    }
    deadline = parse_rfc3339_or_none(annotations.get(DEADLINE_ANNOTATION))
    if node.state == SELECTED and annotations.get(REPLACEMENT_ANNOTATION) is None and node.group:
        short = [c for c in inputs.cells if c.ready < c.desired or not c.available]
        cells = ", ".join(
            f"{c.label} {c.ready}/{c.desired} Ready"
            + ("" if c.available else f" (out of capacity until {c.unavailable_until})")
            for c in short
        )
        latest = _replacement_patience_end(inputs, deadline)
        return _answer(
            inputs,
            "WaitingForCapacity",
            f"selected; waiting for a Ready replacement in group {node.group} before it is "
            f"cordoned" + (f": {cells}" if cells else ""),
            "cordon and drain once the group can spare it",
            eta=latest,
            eta_basis="at the latest: past its deadline it drains without a replacement"
            if latest
            else "when a replacement turns Ready",
            details={"group": node.group, "cells": [c.label for c in short]},
            **common,
        )
    blocked = annotations.get(BLOCKED_ANNOTATION)
    if node.state == SELECTED and blocked and blocked.startswith(DEREGISTRATION_BLOCKED):
        return _answer(
            inputs,
            "DeregistrationFailed",
            f"cordoned; held before its first eviction: {blocked}",
            "retry the deregistration, then drain",
            **common,
        )
    for action in inputs.actions:
        if action.state == "running":
            return _answer(
                inputs,
                "ActionRunning",
                f"lifecycle action {action.key} is running (attempt {action.attempts})",
                "the next step once the action is done",
                details={"action": action.key, "attempt": action.attempts},
                **common,
            )
        if action.state == "held":
            return _answer(
                inputs,
                "ActionHeld",
                f"lifecycle action {action.key} is held: {blocked or 'waiting for the cluster'}",
                "the action, once the cluster can spare the node",
                details={"action": action.key},
                **common,
            )
        if action.state == "failed":
            retry = parse_rfc3339_or_none(action.retry_at)
            return _answer(
                inputs,
                "ActionFailed",
                f"lifecycle action {action.key} failed (attempt {action.attempts}): "
                f"{action.error}; retried at {action.retry_at or 'once the backoff ends'}",
                "retry the action",
                eta=retry,
                eta_basis="the retry" if retry else None,
                details={"action": action.key, "attempt": action.attempts},
                **common,
            )
    wait_until = parse_rfc3339_or_none(annotations.get(DEREGISTRATION_WAIT_ANNOTATION))
    if node.state == SELECTED and wait_until is not None and wait_until > now:
        return _answer(
            inputs,
            "LoadBalancersDraining",
            "cordoned and deregistered from its load balancers at "
            f"{annotations.get(DEREGISTERED_AT_ANNOTATION)}; the first eviction waits until "
            f"they let the instance go, at the latest {format_rfc3339(wait_until)}",
            "drain",
            eta=wait_until,
            eta_basis="at the latest: the longest deregistration delay",
            **common,
        )
    if node.state == TERMINATING:
        return _answer(
            inputs, "Terminating", "drained; its instance is being terminated", "gone", **common
        )
    if node.state == DRAINING and DRAINED_AT_ANNOTATION in annotations:
        return _answer(
            inputs,
            "Drained",
            f"drained at {annotations[DRAINED_AT_ANNOTATION]}; its preTerminate actions run "
            "before it turns terminating",
            "terminate once the preTerminate actions are done",
            **common,
        )
    refusing = refusing_now(inputs.pods, inputs.pdbs)
    if node.state == DRAINING and refusing:
        pdb = refusing[0]
        since = pdb.allowed_since
        names = ", ".join(p.key for p in refusing)
        return _answer(
            inputs,
            "PdbAllowsZero",
            f"draining; PodDisruptionBudget {names} allows 0 disruptions"
            + (f" since {format_rfc3339(since)}" if since else "")
            + (f" (healthy {pdb.current_healthy}, needs {pdb.desired_healthy})")
            + (" — its status may be stale" if pdb.stale else "")
            + (
                " — not recounted since an eviction: is kube-controller-manager running?"
                if _not_recounted(pdb)
                else ""
            ),
            "evict the rest when the PDB allows a disruption",
            eta=deadline if _deletes_after_deadline(inputs) else None,
            eta_basis="the deadline, when pods blocked by PDBs are deleted"
            if _deletes_after_deadline(inputs)
            else "when the PDB allows (Molt never forces a PDB)",
            details={"pdbs": [p.key for p in refusing], "pdbSince": _stamp(since)},
            **{**common, "since": since or common["since"]},
        )
    if blocked:
        return _answer(
            inputs,
            "DrainBlocked",
            f"draining, blocked: {blocked}",
            "finish the drain when the blocker goes",
            eta=deadline if _deletes_after_deadline(inputs) else None,
            eta_basis="the deadline" if _deletes_after_deadline(inputs) else None,
            **common,
        )
    left = [p.key for p in inputs.pods if not (p.daemonset or p.mirror or p.finished)]
    if node.state == DRAINING:
        median = inputs.rotation_median
        return _answer(
            inputs,
            "Draining",
            f"draining: {len(left)} pod(s) left",
            "terminate once empty",
            eta=now + median / 2 if median else None,
            eta_basis="half the median rotation" if median else None,
            details={"podsLeft": len(left)},
            **common,
        )
    return _answer(
        inputs,
        "Admitted",
        "selected; its replacement is Ready: the drain starts now",
        "cordon and drain",
        eta=now,
        eta_basis="now",
        **common,
    )


def _replacement_patience_end(inputs: WhyInputs, deadline: datetime | None) -> datetime | None:
    selected = parse_rfc3339_or_none(inputs.node.annotations.get(SELECTED_AT_ANNOTATION))
    if deadline is None or selected is None or inputs.group_ready_timeout is None:
        return None
    return max(deadline, selected + inputs.group_ready_timeout)


def _deletes_after_deadline(inputs: WhyInputs) -> bool:
    name = inputs.node.annotations.get(POLICY_ANNOTATION)
    policy = next((p for p in inputs.policies if p.metadata.name == name), None)
    return bool(policy and policy.spec.drain.delete_pods_after_deadline)


def _answer(
    inputs: WhyInputs,
    blocker: str,
    message: str,
    next_step: str,
    **fields: Any,
) -> Explanation:
    node = inputs.node
    if node.in_pipeline:
        state = node.state or SELECTED
    elif inputs.plan.decision_for(node.name) is not None:
        state = "waiting"
    else:
        state = "running"
    fields.setdefault("warnings", [])
    return Explanation(node.name, state, blocker, message, next_step, **fields)


def _stamp(moment: datetime | None) -> str | None:
    return format_rfc3339(moment) if moment else None


def _not_recounted(pdb: PdbView) -> bool:
    """It allows 0 while counting more healthy pods than it needs: the API server charged
    an eviction to it and nothing has counted again since (``BudgetRefusal.not_recounted``)."""
    healthy, needed = pdb.current_healthy, pdb.desired_healthy
    return healthy is not None and needed is not None and healthy > needed
