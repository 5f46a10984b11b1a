"""Where a node's progress through the pipeline is recorded: on the node itself.

The state label and the selection annotations are the public contract; the step
annotations below are Molt's own bookkeeping, read back after a restart so every step
runs once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from molt.api.durations import parse_duration
from molt.api.labels import (  # re-exported for the pipeline's steps
    ACTIONS_ANNOTATION,
    DEADLINE_ANNOTATION,
    SELECTED_AT_ANNOTATION,
)
from molt.api.terminationpolicy import Drain, TerminationPolicy
from molt.policy.age import parse_rfc3339_or_none
from molt.policy.drain import DrainRules
from molt.policy.snapshot import NodeView

NO_REPLACEMENT = "none"
GROUP_CAPACITY = "group capacity"
"""The replacement annotation's prefix once the group can spare the node."""


def read_time(node: NodeView, annotation: str) -> datetime | None:
    """A timestamp annotation, or None when absent or unreadable."""
    return parse_rfc3339_or_none(node.annotations.get(annotation))


def drain_settings(policy: TerminationPolicy | None) -> Drain:
    return policy.spec.drain if policy is not None else Drain()


def drain_rules(settings: Drain) -> DrainRules:
    """The drain settings the pure drain plan reads (the schema has checked them)."""
    return DrainRules(
        unreachable_grace=parse_duration(settings.unreachable_grace_period),
        blocked_after=parse_duration(settings.blocked_after),
        leave_cordon_tolerant=settings.cordon_tolerant_pods == "LeaveWithNode",
    )


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


@dataclass(frozen=True)
class ActionState:
    """One action's progress on one node."""

    state: str = "pending"
    """``running``, ``done``, ``failed`` (the last attempt failed; it is retried) or
    ``held`` (it waits for the cluster; tried again without using a retry)."""
    attempts: int = 0
    error: str | None = None
    retry_at: str | None = None

    def to_json(self) -> dict[str, object]:
        found: dict[str, object] = {"state": self.state, "attempts": self.attempts}
        if self.error:
            found["error"] = self.error
        if self.retry_at:
            found["retryAt"] = self.retry_at
        return found


@dataclass(frozen=True)
class ActionProgress:
    """Every lifecycle action's progress on a node, parsed once from its annotation.

    Keyed by hook, source (``ig`` or ``tp``) and name, never by position: editing a list
    while a node is in flight neither skips nor repeats an action. A malformed annotation
    reads as no progress (``malformed`` says so): actions then run again, which is the
    safe side for a hook that must have run before the node goes.
    """

    actions: dict[str, ActionState] = field(default_factory=dict)
    malformed: bool = False

    @staticmethod
    def key(hook: str, source: str, name: str) -> str:
        return f"{hook}/{source}/{name}"

    @classmethod
    def of(cls, node: NodeView) -> ActionProgress:
        raw = node.annotations.get(ACTIONS_ANNOTATION)
        if not raw:
            return cls()
        try:
            loaded = json.loads(raw)
            actions = {
                str(key): ActionState(
                    state=str(value.get("state", "pending")),
                    attempts=int(value.get("attempts", 0)),
                    error=value.get("error"),
                    retry_at=value.get("retryAt"),
                )
                for key, value in loaded.items()
            }
        except (ValueError, TypeError, AttributeError):
            return cls(malformed=True)
        return cls(actions)

    def get(self, key: str) -> ActionState:
        return self.actions.get(key, ActionState())

    def with_state(self, key: str, state: ActionState) -> ActionProgress:
        return ActionProgress({**self.actions, key: state})

    def annotation(self) -> dict[str, str | None]:
        """The node patch that records this progress."""
        body = {key: state.to_json() for key, state in sorted(self.actions.items())}
        return {ACTIONS_ANNOTATION: json.dumps(body, separators=(",", ":"))}
