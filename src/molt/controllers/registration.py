"""Registration: Molt labels and taints a Node that joined one of its cells on its own.

On a cloud, the bootstrap of an instance starts a kubelet that knows nothing of Molt, so
a Node arrives with only its ``spec.providerID``. As Karpenter does when a node
registers, the first time such a Node is seen its provider names the instance's cell
(``Registrar.describe_node``), and the Node gets the contract's labels for that cell, its
revision template's labels and taints and the instance's launch time. Without that a
node is never drift-judged nor counted in its group, and its group would drain the old
nodes with nothing to stand in for them.

One step per reconcile (key ``register/<node>``): a node that already carries
``molt.dev/instance-group`` is left alone, so registration happens once and a repeat is
harmless. A node no provider knows is left untouched, logged once, and looked at again
for a while (its cell may not have been listed yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import structlog

from molt.api.instancegroup import Template
from molt.api.labels import LAUNCHED_AT_ANNOTATION
from molt.cloud.provider import CellRef, NodeOrigin, Registrar
from molt.policy.age import format_rfc3339
from molt.policy.cells import template_revision
from molt.policy.registration import needs_registration, registration_labels
from molt.policy.snapshot import NodeTaint, NodeView
from molt.ports import Clock, ClusterReads, ClusterWrites

log = structlog.get_logger(__name__)

REGISTERED_REASON = "Registered"
NOT_SYNCED_REQUEUE = 1.0
UNKNOWN_RECHECK = 30.0
"""How soon a node no provider knows is asked about again."""
REGISTRATION_PATIENCE = timedelta(minutes=10)
"""A node older than this that no provider knows is not one of Molt's: stop asking."""


class RegistrationReconciler:
    """Registers one node at a time (key: the node's name)."""

    def __init__(
        self,
        reads: ClusterReads,
        writes: ClusterWrites,
        clock: Clock,
        registrars: Sequence[Registrar],
    ) -> None:
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.registrars = tuple(registrars)
        self._reported_unknown: set[str] = set()
        """Nodes already logged as unknown: said once, not at every reconcile."""

    def wants(self, old: NodeView | None, new: NodeView | None) -> bool:
        """Whether a node change is registration's business (cheap: no provider call)."""
        if not self.registrars:
            return False
        if new is None:  # gone: only to forget what was reported about it
            return old is not None and old.name in self._reported_unknown
        return needs_registration(new.labels)

    async def reconcile(self, name: str) -> float | None:
        if not self.reads.synced():
            return NOT_SYNCED_REQUEUE
        node = self.reads.node(name)
        if node is None:
            self._reported_unknown.discard(name)
            return None
        if not needs_registration(node.labels):
            return None
        origin = await self._origin(node)
        if origin is None:
            return self._unknown(node)
        template = self._template(origin.cell)
        labels = registration_labels(
            origin.cell.group,
            origin.cell.revision,
            origin.cell.zone,
            origin.cell.capacity_type,
            template.labels if template is not None else None,
        )
        annotations = {}
        launched = origin.instance.launched_at
        if launched is not None and LAUNCHED_AT_ANNOTATION not in node.annotations:
            # The instance's launch time is the node's age (DESIGN: where the provider knows it).
            annotations[LAUNCHED_AT_ANNOTATION] = format_rfc3339(launched)
        taints = (
            [NodeTaint(key=t.key, effect=t.effect, value=t.value) for t in template.taints]
            if template is not None
            else []
        )
        if not await self.writes.register_node(
            name, labels=labels, annotations=annotations, taints=taints
        ):
            return None  # deleted meanwhile
        self._reported_unknown.discard(name)
        message = f"Registered in cell {origin.cell} (instance {origin.instance.instance_id})"
        if template is None:
            # Only the current and previous revisions keep their template in the status.
            message += f"; the template of revision {origin.cell.revision} is not known, so "
            message += "its labels and taints were not added"
        await self.writes.record_event(node, REGISTERED_REASON, message, warning=template is None)
        log.info(
            "registration.registered",
            node=name,
            cell=str(origin.cell),
            instance=origin.instance.instance_id,
            taints=len(taints),
            template_known=template is not None,
        )
        return None

    async def _origin(self, node: NodeView) -> NodeOrigin | None:
        for registrar in self.registrars:
            origin = await registrar.describe_node(node)
            if origin is not None:
                return origin
        return None

    def _unknown(self, node: NodeView) -> float | None:
        if node.name not in self._reported_unknown:
            self._reported_unknown.add(node.name)
            log.info(
                "registration.unknown_node",
                node=node.name,
                provider_id=node.provider_id,
                providers=[r.name for r in self.registrars],
            )
        young = self.clock.now() - node.created < REGISTRATION_PATIENCE
        return UNKNOWN_RECHECK if young and node.provider_id else None

    def _template(self, cell: CellRef) -> Template | None:
        """The template of the cell's revision: the spec's, else one the status kept."""
        group = self.reads.instance_group(cell.group)
        if group is None:
            return None
        if template_revision(group.spec.template) == cell.revision:
            return group.spec.template
        for revision in group.status.revisions if group.status is not None else []:
            if revision.name == cell.revision:
                return revision.template
        return None
