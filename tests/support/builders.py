"""Builders for the objects tests create: kwok nodes, Deployments, PDBs, Molt resources.

Each returns a plain manifest dict, so a test reads as the YAML a person would apply.
"""

from __future__ import annotations

from typing import Any

from molt.cloud.kwok_nodes import kwok_node

Manifest = dict[str, Any]
__all__ = [
    "deployment",
    "instance_group",
    "kwok_node",
    "never_scheduled",
    "pdb",
    "termination_policy",
]


def deployment(
    name: str,
    namespace: str,
    replicas: int,
    *,
    cpu: str = "100m",
    node_selector: dict[str, str] | None = None,
    pod_annotations: dict[str, str] | None = None,
    spread_over_nodes: bool = False,
    tolerations: list[Manifest] | None = None,
) -> Manifest:
    """A Deployment of pause containers labelled ``app: <name>``.

    ``spread_over_nodes`` adds a hard topology spread (max skew 1 per hostname).
    """
    pod_spec: Manifest = {
        "containers": [
            {
                "name": "app",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spread_over_nodes:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": name}},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": pod_annotations or {}},
                "spec": pod_spec,
            },
        },
    }


def never_scheduled(name: str, namespace: str, app: str) -> Manifest:
    """One pod labelled ``app: <app>`` that no node can take: a PDB over ``app`` expects
    it, so it stays one healthy pod short and refuses evictions it would allow at full
    size (a wait, not a deadlock)."""
    manifest = deployment(name, namespace, 1, node_selector={"no-such": "node"})
    manifest["spec"]["selector"]["matchLabels"] = {"app": app, "never-scheduled": name}
    manifest["spec"]["template"]["metadata"]["labels"] = {"app": app, "never-scheduled": name}
    return manifest


def pdb(
    name: str,
    namespace: str,
    app: str,
    *,
    min_available: int | str | None = None,
    max_unavailable: int | str | None = None,
) -> Manifest:
    """A PodDisruptionBudget over pods labelled ``app: <app>``."""
    spec: Manifest = {"selector": {"matchLabels": {"app": app}}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def instance_group(name: str = "workers", **spec_overrides: Any) -> Manifest:
    """A valid kwok InstanceGroup; keyword arguments replace top-level spec fields."""
    spec: Manifest = {
        "provider": "kwok",
        "minSize": 3,
        "maxSize": 12,
        "replicas": 6,
        "zones": ["zone-a", "zone-b", "zone-c"],
        "template": {"instanceTypes": ["m5.large"], "kwok": {"bootDelay": "5s"}},
        "maxNodeAge": "48h",
        "strategy": {"type": "RollingReplace", "maxSurge": 1, "maxUnavailable": 0},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "molt.dev/v1alpha1",
        "kind": "InstanceGroup",
        "metadata": {"name": name},
        "spec": spec,
    }


def termination_policy(name: str = "rotate-48h", **spec_overrides: Any) -> Manifest:
    """A valid TerminationPolicy; keyword arguments replace top-level spec fields."""
    spec: Manifest = {
        "nodeSelector": {"matchLabels": {"molt.dev/instance-group": "workers"}},
        "rules": {"maxAge": "48h", "maxAgeJitter": "4h", "drift": True},
        "budgets": [{"maxInFlight": 1, "scope": "Cluster"}],
        "drain": {"timeout": "1h"},
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "molt.dev/v1alpha1",
        "kind": "TerminationPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }
