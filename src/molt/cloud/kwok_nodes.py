"""Node manifests for kwok-run nodes: Molt's labels, taints and a launch time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from molt.api.labels import KWOK_NODE_ANNOTATION, LAUNCHED_AT_ANNOTATION
from molt.policy.age import format_rfc3339

__all__ = ["KWOK_NODE_ANNOTATION", "kwok_node"]

Manifest = dict[str, Any]


def kwok_node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    launched_at: datetime | None = None,
    taints: list[Manifest] | None = None,
    cpu: str = "4",
    memory: str = "16Gi",
    pods: str = "110",
) -> Manifest:
    """A Node that kwok runs (annotation ``kwok.x-k8s.io/node: fake``)."""
    notes = {KWOK_NODE_ANNOTATION: "fake", **(annotations or {})}
    if launched_at is not None:
        notes[LAUNCHED_AT_ANNOTATION] = format_rfc3339(launched_at)
    resources = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **(labels or {}),
            },
            "annotations": notes,
        },
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": resources, "capacity": dict(resources)},
    }
