"""A group's nodes as the instance-group phases see them: the Node each instance became,
when a node went NotReady, and which nodes are down on their own for good."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from molt.cloud.provider import Instance
from molt.policy.health import NotReadyNode, struck_at_once
from molt.policy.snapshot import NodeView


def not_ready_since(node: NodeView, now: datetime) -> datetime:
    """When the node's Ready condition last changed (it is not True now)."""
    for condition in node.conditions:
        if condition.type == "Ready" and condition.last_transition is not None:
            return condition.last_transition
    return now


def dead_nodes(
    members: Sequence[NodeView],
    now: datetime,
    not_ready_for: timedelta,
    struck_before: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """Nodes NotReady for at least ``not_ready_for`` on their own (a zone down, a node
    lost): they serve nothing, so they hold no surge and are replaced first. A blink is
    not this, and neither is NotReady that struck several cells at once."""
    down = [
        NotReadyNode(n.name, n.cell, not_ready_since(n, now), young=False)
        for n in members
        if not n.ready
    ]
    struck = struck_at_once(down, len(members), struck_before=struck_before)
    return frozenset(
        n.name for n in down if n.name not in struck and now - n.since >= not_ready_for
    )


class NodeIndex:
    """Finds the Node an instance became: by providerID, else by the name it was given."""

    def __init__(self, members: Sequence[NodeView]) -> None:
        self.by_name = {n.name: n for n in members}
        self.by_provider_id = {n.provider_id: n for n in members if n.provider_id}

    def node_for(self, instance: Instance) -> NodeView | None:
        if instance.provider_id:
            found = self.by_provider_id.get(instance.provider_id)
            if found is not None:
                return found
        return self.by_name.get(instance.node_name) if instance.node_name else None

    def ready(self, instance: Instance) -> bool:
        node = self.node_for(instance)
        return node is not None and node.ready
