"""Which lifecycle actions a node runs, in order: its group's, then its policy's, at each
hook point. One answer for the pipeline that runs them and for ``molt plan`` that shows
them."""

from __future__ import annotations

from molt.api.instancegroup import InstanceGroup
from molt.api.lifecycle import HOOKS, Hook, LifecycleAction
from molt.api.terminationpolicy import TerminationPolicy

Source = str
"""``ig`` (the node's InstanceGroup) or ``tp`` (its TerminationPolicy)."""


def actions_at(
    hook: Hook, group: InstanceGroup | None, policy: TerminationPolicy | None
) -> list[tuple[Source, LifecycleAction]]:
    """The node's actions at ``hook``: its group's, then its policy's."""
    found: list[tuple[Source, LifecycleAction]] = []
    if group is not None:
        found += [("ig", action) for action in group.spec.lifecycle.at(hook)]
    if policy is not None:
        found += [("tp", action) for action in policy.spec.lifecycle.at(hook)]
    return found


def planned(group: InstanceGroup | None, policy: TerminationPolicy | None) -> dict[Hook, list[str]]:
    """Each hook point's actions as ``kind name`` (e.g. ``vault step-down``), in order;
    hook points without actions are left out."""
    found: dict[Hook, list[str]] = {}
    for hook in HOOKS:
        names = [f"{action.kind} {action.name}" for _, action in actions_at(hook, group, policy)]
        if names:
            found[hook] = names
    return found


def describe(plan: dict[Hook, list[str]]) -> str:
    """One line for a table: ``preDrain: http notify; preTerminate: vault step-down``."""
    return "; ".join(f"{hook}: {', '.join(names)}" for hook, names in plan.items()) or "-"
