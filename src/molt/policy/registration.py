"""What registration writes on a node that joined one of Molt's cells: pure functions.

A node that registers on its own (a kubelet started by the cloud's bootstrap) carries
none of Molt's labels. Registration gives it the contract's labels for its cell, the
revision template's labels and taints, and the instance's launch time, so the node is
drift-judged, budgeted and aged like any node Molt made. Taints are merged the way the
API server identifies them, by key and effect: one already there is kept as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from molt.api.labels import CAPACITY_TYPE_LABEL, GROUP_LABEL, REVISION_LABEL, ZONE_LABEL
from molt.policy.snapshot import NodeTaint


def registration_labels(
    group: str,
    revision: str,
    zone: str,
    capacity_type: str,
    template_labels: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The labels of a registered node: the template's, then the cell's (which win)."""
    # The cell's labels go last: a template label must not move a node to another group.
    return {
        **(template_labels or {}),
        GROUP_LABEL: group,
        REVISION_LABEL: revision,
        ZONE_LABEL: zone,
        CAPACITY_TYPE_LABEL: capacity_type,
    }


def missing_taints(
    existing: Iterable[tuple[str, str]], wanted: Sequence[NodeTaint]
) -> list[NodeTaint]:
    """The ``wanted`` taints whose (key, effect) is not in ``existing``, each once.

    ``existing`` is the node's taints as (key, effect) pairs; the API server rejects a
    node with two taints of the same key and effect, so that pair is a taint's identity.
    """
    seen = set(existing)
    added = []
    for taint in wanted:
        identity = (taint.key, taint.effect)
        if identity not in seen:
            seen.add(identity)
            added.append(taint)
    return added


def needs_registration(labels: Mapping[str, str]) -> bool:
    """A node without a group label has not been registered (by Molt or its bootstrap)."""
    return GROUP_LABEL not in labels
