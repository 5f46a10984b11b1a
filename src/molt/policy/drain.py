"""What a drain does with each pod on a node: pure classification, no I/O.

Mirrors ``kubectl drain``'s filters (DaemonSet and mirror pods stay; finished pods are
ignored; pods already being deleted are waited for) and adds Molt's rule that a pod
marked ``molt.dev/do-not-disrupt`` holds the node until its hard deadline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from molt.policy.snapshot import PodView


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

    @property
    def done(self) -> bool:
        """Nothing left that must leave before the instance goes."""
        return not (self.evict or self.held or self.leaving)

    @property
    def remaining(self) -> int:
        return len(self.evict) + len(self.held) + len(self.leaving)


def classify_pods(pods: list[PodView], now: datetime, deadline: datetime | None) -> DrainView:
    """Sort a node's pods for draining; pods are ordered by namespace/name for determinism."""
    evict: list[PodView] = []
    held: list[PodView] = []
    leaving: list[PodView] = []
    left_alone: list[PodView] = []
    past_deadline = deadline is not None and now >= deadline
    for pod in sorted(pods, key=lambda p: p.key):
        if pod.daemonset or pod.mirror or pod.finished:
            left_alone.append(pod)
        elif pod.deleting:
            leaving.append(pod)
        elif pod.do_not_disrupt and not past_deadline:
            held.append(pod)
        else:
            evict.append(pod)
    return DrainView(tuple(evict), tuple(held), tuple(leaving), tuple(left_alone))
