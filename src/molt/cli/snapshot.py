"""``molt snapshot``: a live cluster's fleet, workloads and PDBs as a simulation scenario.

Reads nodes, InstanceGroups, TerminationPolicies, Deployments and PodDisruptionBudgets,
and prints a scenario for ``molt simulate``: each group with its nodes' ages, each
Deployment with its replica count and what scheduling needs (summed requests, node
selector, tolerations, pod labels), each PDB, each policy. Nothing else is copied: no
Secrets, no container images, commands or environment.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from molt.api.durations import format_duration
from molt.api.labels import GROUP_LABEL, LAUNCHED_AT_ANNOTATION, ZONE_LABEL
from molt.kube.reader import connect
from molt.kube.transport import RawApi
from molt.policy.age import parse_rfc3339
from molt.sim.scenario import cpu_millis, memory_mib

Json = dict[str, Any]
UNMANAGED = "unmanaged"


def _node_age(node: Json, now: datetime) -> str:
    meta = node["metadata"]
    raw = (meta.get("annotations") or {}).get(LAUNCHED_AT_ANNOTATION) or meta["creationTimestamp"]
    try:
        return format_duration(now - parse_rfc3339(raw))
    except ValueError:
        return "0s"


def _requests(template: Json) -> dict[str, str]:
    cpu = memory = 0
    for container in (template.get("spec") or {}).get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        if "cpu" in requests:
            cpu += cpu_millis(requests["cpu"])
        if "memory" in requests:
            memory += memory_mib(requests["memory"])
    return {"cpu": f"{cpu or 100}m", "memory": f"{memory or 128}Mi"}


def _groups(nodes: list[Json], groups: list[Json], now: datetime) -> list[Json]:
    by_group: dict[str, list[Json]] = {}
    for node in nodes:
        labels = node["metadata"].get("labels") or {}
        by_group.setdefault(labels.get(GROUP_LABEL, UNMANAGED), []).append(node)
    fleet = []
    known = {g["metadata"]["name"]: g for g in groups}
    for name in sorted(set(by_group) | set(known)):
        members = by_group.get(name, [])
        ages = [_node_age(n, now) for n in members]
        if name in known:
            spec = dict(known[name]["spec"])
            spec["replicas"] = max(spec.get("minSize", 0), min(len(members), spec["maxSize"]))
        else:
            zones = sorted(
                {(n["metadata"].get("labels") or {}).get(ZONE_LABEL, "zone-a") for n in members}
            )
            types = sorted(
                {
                    (n["metadata"].get("labels") or {}).get(
                        "node.kubernetes.io/instance-type", "m5.xlarge"
                    )
                    for n in members
                }
            )
            spec = {
                "provider": "kwok",
                "minSize": len(members),
                "maxSize": len(members) + 1,
                "replicas": len(members),
                "zones": zones or ["zone-a"],
                "template": {"instanceTypes": types[:32] or ["m5.xlarge"]},
            }
        fleet.append({"name": name, "spec": spec, "ages": ages or ["0s"]})
    return fleet


def _workloads(deployments: list[Json]) -> list[Json]:
    found = []
    for item in deployments:
        spec = item.get("spec") or {}
        template = spec.get("template") or {}
        pod_spec = template.get("spec") or {}
        entry: Json = {
            "name": item["metadata"]["name"],
            "namespace": item["metadata"]["namespace"],
            "replicas": spec.get("replicas", 1),
            "requests": _requests(template),
            "labels": (spec.get("selector") or {}).get("matchLabels") or {},
        }
        if pod_spec.get("nodeSelector"):
            entry["nodeSelector"] = pod_spec["nodeSelector"]
        tolerations = [
            {k: t[k] for k in ("key", "operator", "value", "effect") if t.get(k) is not None}
            for t in pod_spec.get("tolerations") or []
        ]
        if tolerations:
            entry["tolerations"] = tolerations
        found.append(entry)
    return found


def _pdbs(items: list[Json]) -> list[Json]:
    found = []
    for item in items:
        spec = item.get("spec") or {}
        entry: Json = {
            "name": item["metadata"]["name"],
            "namespace": item["metadata"]["namespace"],
            "selector": (spec.get("selector") or {}).get("matchLabels") or {},
        }
        for field in ("minAvailable", "maxUnavailable"):
            if spec.get(field) is not None:
                entry[field] = spec[field]
        found.append(entry)
    return found


def _policies(items: list[Json]) -> list[Json]:
    found = []
    for item in items:
        spec = {k: v for k, v in (item.get("spec") or {}).items() if k != "lifecycle"}
        found.append({"name": item["metadata"]["name"], "spec": spec})
    return found


async def take_snapshot(kubeconfig: str | None, duration: str) -> Json:
    api = await connect(kubeconfig)
    async with api:
        raw = RawApi(api)
        nodes, _ = await raw.list_all("/api/v1/nodes")
        groups, _ = await raw.list_all("/apis/molt.dev/v1alpha1/instancegroups")
        policies, _ = await raw.list_all("/apis/molt.dev/v1alpha1/terminationpolicies")
        deployments, _ = await raw.list_all("/apis/apps/v1/deployments")
        pdbs, _ = await raw.list_all("/apis/policy/v1/poddisruptionbudgets")
    now = datetime.now(UTC)
    return {
        "name": "snapshot",
        "start": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration": duration,
        "fleet": _groups(nodes, groups, now),
        "workloads": _workloads(deployments),
        "pdbs": _pdbs(pdbs),
        "policies": _policies(policies),
    }


def snapshot_command(
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="Kubeconfig of the cluster to capture.")
    ] = None,
    duration: Annotated[str, typer.Option(help="Duration to put in the scenario.")] = "96h",
) -> None:
    """Print a simulation scenario captured from a live cluster (no secrets, no pod specs)."""
    try:
        scenario = asyncio.run(take_snapshot(str(kubeconfig) if kubeconfig else None, duration))
    except Exception as error:  # the CLI reports, it does not dump a traceback
        print(f"error: cannot capture the cluster: {error}", file=sys.stderr)
        raise typer.Exit(2) from error
    sys.stdout.write("# Captured by molt snapshot; simulate with: molt simulate FILE\n")
    sys.stdout.write(yaml.safe_dump(scenario, sort_keys=False))
