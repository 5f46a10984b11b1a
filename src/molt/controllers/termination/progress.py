"""Where a node's progress through the pipeline is recorded: on the node itself.

The state label and the selection annotations are the public contract; the step
annotations below are Molt's own bookkeeping, read back after a restart so every step
runs once.
"""

from __future__ import annotations

from datetime import datetime

from molt.api.durations import parse_duration
from molt.api.terminationpolicy import Drain, TerminationPolicy
from molt.policy.age import parse_rfc3339
from molt.policy.snapshot import SELECTED_AT_ANNOTATION, NodeView

SELECTED = "selected"
DRAINING = "draining"
TERMINATING = "terminating"

DEADLINE_ANNOTATION = "molt.dev/deadline"
ACTIONS_DONE_ANNOTATION = "molt.dev/actions-done"
ACTION_FAILURES_ANNOTATION = "molt.dev/action-failures"
DRAIN_STARTED_ANNOTATION = "molt.dev/drain-started-at"
BLOCKED_ANNOTATION = "molt.dev/blocked"

NO_REPLACEMENT = "none"
GROUP_CAPACITY = "group capacity"
"""The replacement annotation's prefix once the group can spare the node."""


def read_time(node: NodeView, annotation: str) -> datetime | None:
    """A timestamp annotation, or None when absent or unreadable."""
    raw = node.annotations.get(annotation)
    if not raw:
        return None
    try:
        return parse_rfc3339(raw)
    except ValueError:
        return None


def drain_settings(policy: TerminationPolicy | None) -> Drain:
    return policy.spec.drain if policy is not None else Drain()


def deadline_of(node: NodeView, policy: TerminationPolicy | None, now: datetime) -> datetime:
    """The node's hard deadline: recorded at selection, else selection + drain timeout."""
    recorded = read_time(node, DEADLINE_ANNOTATION)
    if recorded is not None:
        return recorded
    selected = read_time(node, SELECTED_AT_ANNOTATION) or now
    return selected + parse_duration(drain_settings(policy).timeout)


def count_annotation(node: NodeView, annotation: str) -> int:
    try:
        return max(0, int(node.annotations.get(annotation, "0")))
    except ValueError:
        return 0
