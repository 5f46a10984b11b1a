"""What a drain does with each pod on a node, and what it tells a person: pure, no I/O.

Mirrors ``kubectl drain``'s filters (DaemonSet and mirror pods stay; finished pods are
ignored; pods already being deleted are waited for) and adds Molt's rules:

- a pod marked ``molt.dev/do-not-disrupt`` holds the node until its hard deadline;
- on an *unreachable* node (Ready not True, or tainted ``node.kubernetes.io/unreachable``)
  for ``unreachableGracePeriod``, a pod that is not Ready is deleted rather than evicted.
  It already counts for no PDB, so deleting it lowers no budget's healthy count, while its
  PDB, short of the pods on the dead node, would answer every eviction with 429 forever.
  A pod whose deletion has been due for ``unreachableGracePeriod`` no longer holds the
  drain: no kubelet will confirm it, and pod GC removes it once the Node is deleted
  (Cluster API skips waiting for such pods too);
- pods that tolerate the cordon may be placed back onto the node; by default they are
  drained again, and with ``cordonTolerantPods: LeaveWithNode`` they go down with it.

The words a person reads (``molt.dev/blocked``, ``molt plan``, ``molt drain``) are built
here too, so the pipeline and the CLI say the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from molt.api.labels import UNREACHABLE_TAINT
from molt.policy.age import format_rfc3339
from molt.policy.snapshot import NodeView, PodView


@dataclass(frozen=True)
class DrainRules:
    """The drain settings a plan needs, parsed."""

    unreachable_grace: timedelta = timedelta(minutes=1)
    blocked_after: timedelta = timedelta(minutes=5)
    leave_cordon_tolerant: bool = False


@dataclass(frozen=True)
class DrainView:
    """The pods on a draining node, sorted into what happens to each."""

    evict: tuple[PodView, ...]
    """Pods to send through the Eviction API now."""
    held: tuple[PodView, ...]
    """do-not-disrupt pods held until the deadline."""
    leaving: tuple[PodView, ...]
    """Pods already being deleted: wait for them to go."""
    left_alone: tuple[PodView, ...]
    """DaemonSet pods, mirror pods and finished pods: never evicted, never waited for."""
    delete: tuple[PodView, ...] = ()
    """Unready pods on a node unreachable past its grace period: delete, do not evict."""
    abandoned: tuple[PodView, ...] = ()
    """Pods deleting on an unreachable node past the grace period: no longer waited for."""
    left_with_node: tuple[PodView, ...] = ()
    """Cordon-tolerant pods the policy lets go down with the node."""

    @property
    def done(self) -> bool:
        """Nothing left that must leave before the instance goes."""
        return not (self.evict or self.held or self.leaving or self.delete)

    @property
    def remaining(self) -> int:
        return len(self.evict) + len(self.held) + len(self.leaving) + len(self.delete)


def unreachable_since(node: NodeView) -> datetime | None:
    """Since when the node's kubelet has not been heard from, or None while it is.

    Ready ``False`` or ``Unknown`` (from its last transition), or the node-lifecycle
    controller's ``unreachable`` taint (from when it was added).
    """
    since: list[datetime] = []
    for condition in node.conditions:
        ready_lost = condition.type == "Ready" and condition.status != "True"
        if ready_lost and condition.last_transition is not None:
            since.append(condition.last_transition)
    for taint in node.taints:
        if taint.key == UNREACHABLE_TAINT and taint.added is not None:
            since.append(taint.added)
    return min(since) if since else None


def unreachable_for(node: NodeView, now: datetime, grace: timedelta) -> bool:
    """Whether the node has been unreachable for at least ``grace``."""
    since = unreachable_since(node)
    return since is not None and now - since >= grace


def classify_pods(
    pods: list[PodView],
    now: datetime,
    deadline: datetime | None,
    *,
    unreachable: bool = False,
    rules: DrainRules | None = None,
) -> DrainView:
    """Sort a node's pods for draining; pods are ordered by namespace/name for determinism.

    ``unreachable``: the node has been unreachable for at least the grace period.
    """
    rules = rules or DrainRules()
    evict: list[PodView] = []
    held: list[PodView] = []
    leaving: list[PodView] = []
    left_alone: list[PodView] = []
    delete: list[PodView] = []
    abandoned: list[PodView] = []
    left_with_node: list[PodView] = []
    past_deadline = deadline is not None and now >= deadline
    for pod in sorted(pods, key=lambda p: p.key):
        if pod.daemonset or pod.mirror or pod.finished:
            left_alone.append(pod)
        elif pod.deleting:
            due = pod.deletion_timestamp
            if unreachable and (due is None or now - due >= rules.unreachable_grace):
                abandoned.append(pod)
            else:
                leaving.append(pod)
        elif pod.do_not_disrupt and not past_deadline:
            held.append(pod)
        elif rules.leave_cordon_tolerant and pod.tolerates_cordon:
            left_with_node.append(pod)
        elif unreachable and not pod.ready:
            delete.append(pod)
        else:
            evict.append(pod)
    return DrainView(
        tuple(evict),
        tuple(held),
        tuple(leaving),
        tuple(left_alone),
        tuple(delete),
        tuple(abandoned),
        tuple(left_with_node),
    )


_BUDGET_WORDS = re.compile(
    r"disruption budget (?P<name>[a-z0-9.-]+) needs (?P<needs>\d+) healthy pods? "
    r"and has (?P<has>\d+)"
)


@dataclass(frozen=True)
class BudgetRefusal:
    """A PDB's refusal of one pod's eviction, as the Eviction API worded it."""

    pod: str
    since: datetime
    message: str = ""

    @property
    def budget(self) -> str | None:
        found = _BUDGET_WORDS.search(self.message)
        return found["name"] if found else None

    @property
    def allowed_disruptions(self) -> int | None:
        """Always 0 for a refusal: the API server refused because ``disruptionsAllowed``
        was 0, whatever the healthy count it quotes (see ``not_recounted``)."""
        return 0 if _BUDGET_WORDS.search(self.message) else None

    @property
    def not_recounted(self) -> bool:
        """The refusal quotes more healthy pods than the PDB needs: its status has not been
        recounted since the API server charged an eviction to it (the API server lowers
        ``disruptionsAllowed`` itself; only the disruption controller, in
        kube-controller-manager, counts again). For a moment after every eviction that is
        normal; for as long as a blocked report takes, the controller is not running."""
        found = _BUDGET_WORDS.search(self.message)
        return found is not None and int(found["has"]) > int(found["needs"])

    def describe(self) -> str:
        """Stable while the refusal lasts, so the node is patched (and an Event recorded)
        once, not on every retry."""
        budget = self.budget
        if budget is None:
            detail = "a PodDisruptionBudget"
        elif self.not_recounted:
            detail = (
                f"PodDisruptionBudget {budget} (allowed disruptions: 0; its status has not "
                "been recounted since an eviction: is kube-controller-manager running?)"
            )
        else:
            detail = f"PodDisruptionBudget {budget} (allowed disruptions: 0)"
        return f"{self.pod} refused by {detail} since {format_rfc3339(self.since)}"


@dataclass(frozen=True)
class DrainFindings:
    """What the drain has run into so far, beyond what a pod list shows."""

    refusals: Mapping[str, BudgetRefusal]
    """Pods the Eviction API refused with 429, by pod key, since their first refusal."""
    multiple_pdbs: tuple[str, ...] = ()
    returned: Mapping[str, int] | None = None
    """Cordon-tolerant pods that landed back on the node after the drain began, by owner."""
    returning_since: datetime | None = None


def blocked_message(
    view: DrainView,
    findings: DrainFindings,
    deadline: datetime,
    now: datetime,
    rules: DrainRules,
) -> str | None:
    """The sentence a person reads on a node whose drain cannot finish by itself."""
    parts: list[str] = []
    if findings.multiple_pdbs:
        parts.append(
            "pods under more than one PodDisruptionBudget (the Eviction API refuses them; "
            f"fix the PDBs): {', '.join(findings.multiple_pdbs[:5])}"
        )
    if view.held:
        names = ", ".join(p.key for p in view.held[:5])
        parts.append(f"do-not-disrupt pods hold the node until {format_rfc3339(deadline)}: {names}")
    still_here = {p.key for p in view.evict}
    stuck = sorted(
        (r for r in findings.refusals.values() if r.pod in still_here),
        key=lambda r: (r.since, r.pod),
    )
    long_refused = [r for r in stuck if now - r.since >= rules.blocked_after]
    if long_refused:
        shown = "; ".join(r.describe() for r in long_refused[:3])
        more = f" (and {len(long_refused) - 3} more)" if len(long_refused) > 3 else ""
        parts.append(f"evictions refused: {shown}{more}")
    returning = findings.returned or {}
    since = findings.returning_since
    if returning and since is not None and now - since >= rules.blocked_after:
        owners = ", ".join(f"{owner} ({count}x)" for owner, count in sorted(returning.items()))
        parts.append(
            "pods that tolerate the cordon keep landing back on the node: "
            f"{owners}; give them a toleration that excludes "
            "node.kubernetes.io/unschedulable, or set drain.cordonTolerantPods: LeaveWithNode"
        )
    return "; ".join(parts) or None
