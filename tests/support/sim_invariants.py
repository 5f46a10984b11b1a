"""Invariants checked on every simulated run, from what the simulated cluster saw.

``InvariantMonitor`` listens to a ``Simulation`` before it runs and records a violation
when: a node enters the pipeline under a TerminationPolicy while one of the policy's
budgets is already full in the node's scope (counted from the nodes the policy covers, as
the cluster holds them at that instant); a policy that does not opt in selects a
control-plane node; Molt deletes a node that still holds a pod not being deleted (it was
not drained). After the run, ``check`` adds every PDB violation the eviction subresource
recorded and every controller error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from molt.api.labels import POLICY_ANNOTATION
from molt.api.types import resolve_count_or_percent
from molt.policy.budgets import DEFAULT_BUDGET, DEFAULT_MINIMUM, scope_key
from molt.policy.selection import covers
from molt.policy.snapshot import NodeView
from molt.sim.runner import Simulation


@dataclass
class InvariantMonitor:
    """Watches one simulation; ``violations`` says what broke, ``counts`` what was checked."""

    sim: Simulation
    violations: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {"admissions": 0, "deletions": 0, "controlPlaneSelections": 0}
    )

    def __post_init__(self) -> None:
        self.sim.cluster.node_listeners.append(self._node_changed)
        cluster, cloud = self.sim.cluster, self.sim.cloud
        delete_node, terminate = cluster.delete_node, cloud.terminate

        async def checked_delete(name: str) -> bool:
            self._deleting(name)
            return await delete_node(name)

        async def checked_terminate(node: NodeView) -> None:
            self._deleting(node.name)
            await terminate(node)

        cluster.delete_node = checked_delete  # type: ignore[method-assign]
        cloud.terminate = checked_terminate  # type: ignore[method-assign]

    def _at(self) -> str:
        return f"{self.sim.clock.seconds:.0f}s"

    def _deleting(self, name: str) -> None:
        self.counts["deletions"] += 1
        left = [p.key for p in self.sim.cluster.pods_on(name) or [] if not p.deleting]
        if left:
            self.violations.append(f"{self._at()}: node {name} deleted with pods {left}")

    def _node_changed(self, name: str, old: NodeView | None, new: NodeView | None) -> None:
        if new is None or not new.in_pipeline or (old is not None and old.in_pipeline):
            return
        policy_name = new.annotations.get(POLICY_ANNOTATION)
        policy = self.sim.cluster.policy(policy_name) if policy_name else None
        if policy is None:
            return  # selected by its instance group (drift, scale-down), not by a policy
        self.counts["admissions"] += 1
        if new.is_control_plane:
            self.counts["controlPlaneSelections"] += 1
            if not policy.spec.include_control_plane:
                self.violations.append(
                    f"{self._at()}: control-plane node {name} selected by {policy_name}, "
                    f"which does not include the control plane"
                )
        covered = [n for n in self.sim.cluster.nodes() if covers(policy, n)]
        budgets = list(policy.spec.budgets) or [DEFAULT_BUDGET]
        for budget in budgets:
            if budget.reasons:
                continue  # the generator draws none; a reason filter is not re-derived here
            key = scope_key(budget, new.group, new.zone)
            bucket = [n for n in covered if scope_key(budget, n.group, n.zone) == key]
            allowed = resolve_count_or_percent(budget.max_in_flight, len(bucket))
            if not policy.spec.budgets:
                allowed = max(DEFAULT_MINIMUM, allowed)
            flying = sum(1 for n in bucket if n.in_pipeline)
            if flying > allowed:
                self.violations.append(
                    f"{self._at()}: {name} admitted with {flying} in flight in {key}, "
                    f"budget maxInFlight {budget.max_in_flight} allows {allowed}"
                )

    def check(self) -> list[str]:
        """Every violation: those seen during the run, PDBs broken, controller errors."""
        found = list(self.violations)
        for budget in self.sim.cluster.budgets.values():
            found.extend(f"PDB {budget.key}: {v}" for v in budget.violations)
        found.extend(f"controller error: {m}" for m in self.sim.stats.error_messages)
        if self.sim.stats.errors > len(self.sim.stats.error_messages):
            found.append(f"{self.sim.stats.errors} controller errors in all")
        return found
