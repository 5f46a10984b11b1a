"""The policy core's view of the world: slim, immutable projections of cluster objects.

Adapters (the watch cache, the simulator, the CLI) build these; the core never sees a
raw API object, which keeps it fast for thousands of nodes and free of I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from molt.api.labels import (  # re-exported: the core's callers import them from here
    CAPACITY_TYPE_LABEL,
    CONTROL_PLANE_LABELS,
    DO_NOT_DISRUPT,
    GROUP_LABEL,
    MIRROR_ANNOTATION,
    REPLACEMENT_ANNOTATION,
    REVISION_LABEL,
    STATE_LABEL,
    ZONE_LABEL,
)
from molt.policy.cached import cached
from molt.policy.cells import ON_DEMAND, CellKey, cell_key


def merge_string_map(
    current: dict[str, str], patch: dict[str, str | None] | None
) -> dict[str, str]:
    """A JSON merge patch of a string map (labels, annotations): None deletes a key."""
    if not patch:
        return current
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@dataclass(frozen=True)
class NodeCondition:
    """A node condition and when it last changed."""

    type: str
    status: str
    last_transition: datetime | None = None


@dataclass(frozen=True)
class NodeTaint:
    """A taint; ``added`` is only known for taints the API server timestamps."""

    key: str
    effect: str
    value: str | None = None
    added: datetime | None = None


@dataclass(frozen=True)
class NodeView:
    """What the policy needs of a Node."""

    name: str
    created: datetime
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    conditions: tuple[NodeCondition, ...] = ()
    taints: tuple[NodeTaint, ...] = ()
    unschedulable: bool = False
    launched_at: datetime | None = None
    """Launch time known to the provider (e.g. EC2 LaunchTime); beats the annotation."""
    uid: str = ""
    provider_id: str | None = None
    addresses: tuple[str, ...] = ()
    """The node's status addresses (InternalIP first), for lifecycle actions."""

    @cached
    def group(self) -> str | None:
        return self.labels.get(GROUP_LABEL)

    @cached
    def zone(self) -> str | None:
        return self.labels.get(ZONE_LABEL)

    @cached
    def cell(self) -> CellKey:
        """The zone and capacity type the node runs in (``unknown`` / on-demand if unlabelled)."""
        return cell_key(self.zone or "unknown", self.labels.get(CAPACITY_TYPE_LABEL, ON_DEMAND))

    @cached
    def revision(self) -> str | None:
        return self.labels.get(REVISION_LABEL)

    @cached
    def state(self) -> str | None:
        return self.labels.get(STATE_LABEL)

    @cached
    def available(self) -> bool:
        """Ready, and not yet past its group's drain gate: it counts toward the group's
        floor of Ready nodes."""
        return self.ready and REPLACEMENT_ANNOTATION not in self.annotations

    @cached
    def in_pipeline(self) -> bool:
        return self.state is not None

    @cached
    def is_control_plane(self) -> bool:
        return any(label in self.labels for label in CONTROL_PLANE_LABELS)

    @cached
    def do_not_disrupt(self) -> bool:
        return self.annotations.get(DO_NOT_DISRUPT) == "true"

    def patched(
        self,
        *,
        labels: dict[str, str | None] | None = None,
        annotations: dict[str, str | None] | None = None,
        unschedulable: bool | None = None,
    ) -> NodeView:
        """This node after a merge patch: None deletes a label or annotation."""
        return replace(
            self,
            labels=merge_string_map(self.labels, labels),
            annotations=merge_string_map(self.annotations, annotations),
            unschedulable=self.unschedulable if unschedulable is None else unschedulable,
        )

    @cached
    def ready(self) -> bool:
        # Cached: group gates and cell sizing ask it of every node in a group, often.
        return any(c.type == "Ready" and c.status == "True" for c in self.conditions)


@dataclass(frozen=True)
class PodView:
    """What a drain needs of a Pod."""

    namespace: str
    name: str
    uid: str
    node: str | None
    phase: str = "Pending"
    owner_kinds: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    deleting: bool = False
    """The pod has a deletionTimestamp: it is on its way out."""
    deletion_timestamp: datetime | None = None
    """When its deletion is due (the deletionTimestamp: the request time plus the grace
    period); a pod past it by long on an unreachable node has no kubelet to confirm it."""
    ready: bool = False
    """Its Ready condition is True: only a Ready pod counts toward a PDB's healthy pods."""
    tolerates_cordon: bool = False
    """A toleration matches ``node.kubernetes.io/unschedulable:NoSchedule``, so the
    scheduler may place it back onto a cordoned node."""
    created: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    """What a PodDisruptionBudget's selector matches."""
    name_generated: bool = False
    """The API server made its name up (``metadata.generateName`` plus five random
    characters, as for a ReplicaSet's pods): no earlier pod had that name."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def daemonset(self) -> bool:
        return "DaemonSet" in self.owner_kinds

    @property
    def mirror(self) -> bool:
        return MIRROR_ANNOTATION in self.annotations

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @cached
    def do_not_disrupt(self) -> bool:
        return self.annotations.get(DO_NOT_DISRUPT) == "true"


@dataclass(frozen=True)
class GroupView:
    """What the policy needs of an InstanceGroup."""

    name: str
    current_revision: str | None = None
    max_node_age_seconds: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything a plan is computed from, at one instant."""

    nodes: tuple[NodeView, ...]
    groups: dict[str, GroupView] = field(default_factory=dict)
