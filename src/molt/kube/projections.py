"""Raw API JSON -> the policy core's slim views.

Parsing dicts straight from the wire (no generated client models) keeps a snapshot of
thousands of nodes cheap to build.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from molt.api.durations import InvalidDurationError, parse_duration
from molt.api.instancegroup import DEFAULT_MAX_NODE_AGE
from molt.api.labels import CORDON_TAINT, DO_NOT_DISRUPT, MIRROR_ANNOTATION
from molt.api.types import LabelSelector
from molt.policy.age import parse_rfc3339_or_none
from molt.policy.pdbs import PdbView
from molt.policy.snapshot import GroupView, NodeCondition, NodeTaint, NodeView, PodView

Json = dict[str, Any]


def node_view(raw: Json) -> NodeView:
    """Project a Node object."""
    meta = raw.get("metadata", {})
    spec = raw.get("spec", {})
    status = raw.get("status", {})
    created = parse_rfc3339_or_none(meta.get("creationTimestamp"))
    if created is None:
        raise ValueError(f"node {meta.get('name')!r} has no creationTimestamp")
    return NodeView(
        name=meta["name"],
        created=created,
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        conditions=tuple(
            NodeCondition(
                type=c.get("type", ""),
                status=c.get("status", "Unknown"),
                last_transition=parse_rfc3339_or_none(c.get("lastTransitionTime")),
            )
            for c in status.get("conditions") or []
        ),
        taints=tuple(
            NodeTaint(
                key=t.get("key", ""),
                effect=t.get("effect", ""),
                value=t.get("value"),
                added=parse_rfc3339_or_none(t.get("timeAdded")),
            )
            for t in spec.get("taints") or []
        ),
        unschedulable=bool(spec.get("unschedulable", False)),
        uid=str(meta.get("uid", "")),
        provider_id=spec.get("providerID"),
        addresses=_addresses(status),
    )


def _addresses(status: Json) -> tuple[str, ...]:
    """The node's addresses, InternalIP ones first, each once."""
    found = [
        (a.get("type") != "InternalIP", str(a.get("address", "")))
        for a in status.get("addresses") or []
        if a.get("address")
    ]
    return tuple(dict.fromkeys(address for _, address in sorted(found, key=lambda f: f[0])))


def pod_view(raw: Json) -> PodView:
    """Project a Pod to what a drain needs."""
    meta = raw.get("metadata", {})
    return PodView(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=str(meta.get("uid", "")),
        node=(raw.get("spec") or {}).get("nodeName"),
        phase=(raw.get("status") or {}).get("phase", "Pending"),
        owner_kinds=tuple(str(o.get("kind", "")) for o in meta.get("ownerReferences") or []),
        annotations=dict(meta.get("annotations") or {}),
        deleting=meta.get("deletionTimestamp") is not None,
        deletion_timestamp=parse_rfc3339_or_none(meta.get("deletionTimestamp")),
        ready=any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (raw.get("status") or {}).get("conditions") or []
        ),
        tolerates_cordon=tolerates_cordon((raw.get("spec") or {}).get("tolerations") or []),
        created=parse_rfc3339_or_none(meta.get("creationTimestamp")),
        labels=dict(meta.get("labels") or {}),
        name_generated=_name_generated(meta),
    )


GENERATED_SUFFIX_LENGTH = 5
"""The API server appends this many random characters to a ``generateName``."""


def _name_generated(meta: Json) -> bool:
    """Whether the API server generated the object's name from its ``generateName``."""
    prefix = meta.get("generateName") or ""
    name = str(meta.get("name", ""))
    return (
        bool(prefix)
        and name.startswith(prefix)
        and (len(name) == len(prefix) + GENERATED_SUFFIX_LENGTH)
    )


POD_ANNOTATIONS_READ = (MIRROR_ANNOTATION, DO_NOT_DISRUPT)
"""The only pod annotations a drain reads (a mirror pod's marker, Molt's opt-out)."""


def cached_pod_view(raw: Json) -> PodView:
    """Project a Pod for the controller's cluster-wide pod cache: what ``pod_view`` gives,
    keeping only the annotations a drain reads and sharing the strings that repeat from
    pod to pod (namespace, node, phase, owner kinds, label keys and values), so tens of
    thousands of cached pods cost tens of MB, not hundreds."""
    view = pod_view(raw)
    intern = sys.intern
    annotations = {
        key: intern(view.annotations[key])
        for key in POD_ANNOTATIONS_READ
        if key in view.annotations
    }
    return replace(
        view,
        namespace=intern(view.namespace),
        node=intern(view.node) if view.node else view.node,
        phase=intern(view.phase),
        owner_kinds=tuple(intern(kind) for kind in view.owner_kinds),
        annotations=annotations,
        labels={intern(key): intern(value) for key, value in view.labels.items()},
    )


def pdb_view(raw: Json) -> PdbView:
    """Project a policy/v1 PodDisruptionBudget; an unreadable selector selects nothing
    (the API server validated it, so that is a client-side gap, reported by omission)."""
    meta = raw.get("metadata", {})
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    selector: LabelSelector | None = None
    if spec.get("selector") is not None:
        try:
            selector = LabelSelector.model_validate(spec["selector"])
        except ValueError:
            selector = None
    allowed_since = next(
        (
            parse_rfc3339_or_none(c.get("lastTransitionTime"))
            for c in status.get("conditions") or []
            if c.get("type") == "DisruptionAllowed"
        ),
        None,
    )
    observed = status.get("observedGeneration")
    return PdbView(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        selector=selector,
        min_available=spec.get("minAvailable"),
        max_unavailable=spec.get("maxUnavailable"),
        expected_pods=status.get("expectedPods"),
        current_healthy=status.get("currentHealthy"),
        desired_healthy=status.get("desiredHealthy"),
        disruptions_allowed=status.get("disruptionsAllowed"),
        allowed_since=allowed_since,
        stale=observed is None or observed < int(meta.get("generation") or 0),
        disrupted_pods={
            name: parse_rfc3339_or_none(admitted)
            for name, admitted in (status.get("disruptedPods") or {}).items()
        },
    )


def tolerates_cordon(tolerations: list[Json]) -> bool:
    """Whether a pod tolerates the taint a cordon stands for
    (``node.kubernetes.io/unschedulable:NoSchedule``, which the scheduler honours)."""
    for toleration in tolerations:
        key = toleration.get("key") or ""
        effect = toleration.get("effect") or ""
        if key not in ("", CORDON_TAINT) or effect not in ("", "NoSchedule"):
            continue
        if toleration.get("operator") == "Exists" or key == CORDON_TAINT:
            return True
    return False


def group_view(raw: Json) -> GroupView:
    """Project an InstanceGroup (tolerating a partly written status)."""
    spec = raw.get("spec", {})
    status = raw.get("status") or {}
    max_age: float | None = None
    # The API server fills in the CRD's default; an object read without it (an older CRD)
    # gets the same default the model has.
    try:
        max_age = parse_duration(spec.get("maxNodeAge") or DEFAULT_MAX_NODE_AGE).total_seconds()
    except InvalidDurationError:
        max_age = None
    return GroupView(
        name=raw["metadata"]["name"],
        current_revision=status.get("currentRevision"),
        max_node_age_seconds=max_age,
    )
