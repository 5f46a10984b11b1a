"""The reapers' decisions: which pods and nodes are due, and how many may go now.

Pure functions over views and a clock reading; the controller lists, asks providers and
deletes. A pod is only ever due on a node that is not Ready (a healthy node's kubelet
finishes its own deletions); a node only when a provider has said its instance is gone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from molt.policy.snapshot import NodeView, PodView

JOB_KIND = "Job"
MINUTE = timedelta(minutes=1)


def not_ready_since(node: NodeView) -> datetime | None:
    """When the node stopped being Ready (None: it is Ready).

    A node without a Ready condition has never been Ready: it counts from its creation.
    """
    for condition in node.conditions:
        if condition.type == "Ready":
            if condition.status == "True":
                return None
            return condition.last_transition or node.created
    return node.created


def not_ready_for(node: NodeView, now: datetime) -> timedelta | None:
    """How long the node has been NotReady or Unknown (None: it is Ready)."""
    since = not_ready_since(node)
    return None if since is None else now - since


def stuck_pods_due(
    node: NodeView,
    pods: Iterable[PodView],
    now: datetime,
    after: timedelta,
    namespaces: frozenset[str] | None = None,
) -> list[PodView]:
    """The node's pods stuck Terminating at least ``after`` past their deletion deadline.

    Empty for a Ready node, whatever its pods. ``namespaces`` (None: all) limits the
    pods to those the Reaper's namespace selector picks.
    """
    if not_ready_since(node) is None:
        return []
    due = []
    for pod in pods:
        if pod.node != node.name or not pod.deleting or pod.deletion_timestamp is None:
            continue
        if namespaces is not None and pod.namespace not in namespaces:
            continue
        if now - pod.deletion_timestamp >= after:
            due.append(pod)
    return due


def finished_pod_due(
    pod: PodView, now: datetime, ttl: timedelta, namespaces: frozenset[str] | None = None
) -> bool:
    """A Succeeded or Failed pod, not a Job's, not already deleting, older than ``ttl``.

    Age counts from the pod's creation (the one time every pod carries).
    """
    if not pod.finished or pod.deleting or JOB_KIND in pod.owner_kinds:
        return False
    if namespaces is not None and pod.namespace not in namespaces:
        return False
    return pod.created is not None and now - pod.created >= ttl


def ghost_candidate(node: NodeView, now: datetime, after: timedelta) -> bool:
    """NotReady at least ``after`` and naming an instance: worth asking its provider."""
    if not node.provider_id:
        return False
    gone_for = not_ready_for(node, now)
    return gone_for is not None and gone_for >= after


@dataclass
class RateLimit:
    """At most ``per_minute`` actions in any sliding minute."""

    per_minute: int
    taken: deque[datetime] = field(default_factory=deque)

    def _expire(self, now: datetime) -> None:
        while self.taken and now - self.taken[0] >= MINUTE:
            self.taken.popleft()

    def remaining(self, now: datetime) -> int:
        self._expire(now)
        return max(0, self.per_minute - len(self.taken))

    def take(self, now: datetime) -> bool:
        """Spend one action; False (nothing spent) when the minute's budget is used up."""
        if self.remaining(now) == 0:
            return False
        self.taken.append(now)
        return True
