"""Workloads in the simulated cluster: Deployments, their pods, PodDisruptionBudgets.

A ``Deployment`` keeps ``replicas`` pods alive as its ReplicaSet does: a pod that is
evicted, deleted or lost with its node is replaced at once by a new Pending pod. A
``Budget`` (a PDB) follows the disruption controller and the eviction subresource:
healthy pods are the Ready ones not being deleted, ``disruptionsAllowed`` is healthy
minus desired-healthy (``minAvailable``, or the expected count minus
``maxUnavailable``, percentages rounded up), an eviction that would take it below zero
is refused with 429, and a running pod under two budgets is refused with 500 (a Pending
pod is evicted without a look at its budgets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from molt.api.labels import DO_NOT_DISRUPT
from molt.api.types import LabelSelector
from molt.policy.pdbs import PdbView
from molt.policy.snapshot import PodView


@dataclass(frozen=True)
class Toleration:
    """A pod toleration: an empty key with ``Exists`` tolerates everything."""

    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None

    def tolerates(self, key: str, value: str | None, effect: str) -> bool:
        if self.effect is not None and self.effect != effect:
            return False
        if self.key is None:
            return self.operator == "Exists"
        if self.key != key:
            return False
        return self.operator == "Exists" or (self.value or "") == (value or "")


@dataclass
class Deployment:
    """A Deployment and what scheduling needs of its pod template."""

    namespace: str
    name: str
    replicas: int
    cpu_millis: int = 100
    memory_mib: int = 128
    labels: dict[str, str] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    startup_seconds: float = 10.0
    """From binding to Ready (image pull, start, readiness probe)."""
    grace_seconds: float = 5.0
    """From an eviction to the pod being gone (terminationGracePeriod as used)."""
    do_not_disrupt: bool = False
    pods: dict[str, SimPod] = field(default_factory=dict)
    ready: int = 0
    """Pods Ready and not being deleted: what a PDB counts as healthy."""
    budgets: list[Budget] = field(default_factory=list)
    serial: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def placement_key(self) -> tuple[object, ...]:
        """Pods with equal keys fit the same nodes (before resources)."""
        return (tuple(sorted(self.node_selector.items())), self.tolerations)

    def tolerates(self, key: str, value: str | None, effect: str) -> bool:
        if effect == "PreferNoSchedule":
            return True
        return any(t.tolerates(key, value, effect) for t in self.tolerations)


@dataclass
class SimPod:
    """One pod; ``view`` is the projection the controller reads, rebuilt on change."""

    deployment: Deployment
    name: str
    uid: str
    node: str | None = None
    running: bool = False
    ready: bool = False
    deleting: bool = False
    deletion_due: datetime | None = None
    view: PodView | None = None

    def project(self) -> PodView:
        if self.view is None:
            owner = self.deployment
            self.view = PodView(
                namespace=owner.namespace,
                name=self.name,
                uid=self.uid,
                node=self.node,
                phase="Running" if self.running else "Pending",
                owner_kinds=("ReplicaSet",),
                annotations={DO_NOT_DISRUPT: "true"} if owner.do_not_disrupt else {},
                deleting=self.deleting,
                deletion_timestamp=self.deletion_due,
                ready=self.ready,
                labels=owner.labels,
            )
        return self.view

    def changed(self) -> None:
        self.view = None


def _scaled(value: int | str, total: int) -> int:
    """An int-or-percent against ``total``, rounding percentages up as the API server does."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


@dataclass
class Budget:
    """A PodDisruptionBudget over the pods of the Deployments its selector matches."""

    namespace: str
    name: str
    selector: dict[str, str]
    min_available: int | str | None = None
    max_unavailable: int | str | None = None
    deployments: list[Deployment] = field(default_factory=list)
    lowest_healthy: int | None = None
    lowest_at: float = 0.0
    armed: bool = False
    """Minimums count only once every expected pod was healthy (start-up is not a dip)."""
    violations: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, deployment: Deployment) -> bool:
        if deployment.namespace != self.namespace or not self.selector:
            return False
        return all(deployment.labels.get(k) == v for k, v in self.selector.items())

    @property
    def expected(self) -> int:
        return sum(d.replicas for d in self.deployments)

    @property
    def healthy(self) -> int:
        return sum(d.ready for d in self.deployments)

    @property
    def desired_healthy(self) -> int:
        if self.min_available is not None:
            return _scaled(self.min_available, self.expected)
        if self.max_unavailable is not None:
            return max(0, self.expected - _scaled(self.max_unavailable, self.expected))
        return 0

    @property
    def disruptions_allowed(self) -> int:
        return max(0, self.healthy - self.desired_healthy)

    def view(self) -> PdbView:
        """The budget as the controller reads a PodDisruptionBudget."""
        return PdbView(
            namespace=self.namespace,
            name=self.name,
            selector=LabelSelector(match_labels=dict(self.selector)),
            min_available=self.min_available,
            max_unavailable=self.max_unavailable,
            expected_pods=self.expected,
            current_healthy=self.healthy,
            desired_healthy=self.desired_healthy,
            disruptions_allowed=self.disruptions_allowed,
        )

    def observe(self, now: float) -> None:
        """Remember the fewest healthy pods seen (the report's minimum availability)."""
        healthy = self.healthy
        if not self.armed:
            self.armed = healthy >= self.expected
            if not self.armed:
                return
        if self.lowest_healthy is None or healthy < self.lowest_healthy:
            self.lowest_healthy = healthy
            self.lowest_at = now
