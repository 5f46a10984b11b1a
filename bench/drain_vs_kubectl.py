"""Drain speed side by side: ``molt drain`` against the real ``kubectl drain`` on the same
node shape, in one sandbox.

Two kwok nodes; 100 pods of 4 Deployments under PDBs (``maxUnavailable`` 2 and 20 %) and
a DaemonSet pod on each. Each round drains the node holding the pods onto the other one
with one tool, then back with the other; the order alternates between rounds, so neither
tool always drains first. PDB health is followed through a watch of every PDB's status
(a violation is ``currentHealthy`` below ``desiredHealthy`` while an eviction is under
way); after each drain the drained node must hold only its DaemonSet pod.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from bench.support import sandbox
from molt.cloud.kwok_nodes import kwok_node
from molt.kube.reader import connect
from molt.kube.transport import RawApi
from molt.kube.watch import Reflector
from molt.sandbox.binaries import ensure_binaries

NAMESPACE = "drain-bench"
NODES = ("bench-a", "bench-b")
WORKLOADS: dict[str, tuple[int, dict[str, int | str]]] = {
    "web": (40, {"maxUnavailable": 2}),
    "api": (30, {"maxUnavailable": "20%"}),
    "queue": (20, {"maxUnavailable": 2}),
    "cache": (10, {"maxUnavailable": "20%"}),
}
ROUNDS = 2
GOAL = 1.0


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                    "nodeSelector": {"bench": "drain"},
                },
            },
        },
    }


def _daemonset() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {
                    "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}],
                    "nodeSelector": {"bench": "drain"},
                },
            },
        },
    }


class BudgetWatch:
    """The smallest margin (currentHealthy - desiredHealthy) each PDB showed, by watch."""

    def __init__(self) -> None:
        self.lowest: dict[str, int] = {}
        self.counting = False

    def seen(self, key: str, old: Any, new: Any) -> None:
        if new is None or not self.counting:
            return
        margin = int(new.get("currentHealthy") or 0) - int(new.get("desiredHealthy") or 0)
        self.lowest[key] = min(self.lowest.get(key, margin), margin)

    @property
    def violations(self) -> int:
        return sum(1 for margin in self.lowest.values() if margin < 0)


async def _pods_on(core: client.CoreV1Api, node: str) -> list[Any]:
    found = await core.list_namespaced_pod(NAMESPACE, field_selector=f"spec.nodeName={node}")
    return found.items


async def _all_ready(core: client.CoreV1Api, node: str, count: int) -> bool:
    pods = await _pods_on(core, node)
    ready = [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return len(ready) >= count


async def _wait(probe: Any, what: str, limit: float = 300.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def _drain_command(tool: str, node: str, kubeconfig: Path, kubectl: Path) -> list[str]:
    if tool == "molt":
        return [
            sys.executable,
            "-m",
            "molt.cli.main",
            "drain",
            node,
            f"--kubeconfig={kubeconfig}",
            "--timeout=10m",
        ]
    return [
        str(kubectl),
        f"--kubeconfig={kubeconfig}",
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=10m",
    ]


async def _bench(kubeconfig: Path, kubectl: Path) -> dict[str, list[float]]:
    api = await connect(str(kubeconfig))
    watch = BudgetWatch()
    async with api:
        core = client.CoreV1Api(api)
        await core.create_namespace({"metadata": {"name": NAMESPACE}})
        for name in NODES:
            node = kwok_node(name, labels={"bench": "drain"}, cpu="64", memory="256Gi")
            await core.create_node(node)
        await core.patch_node(NODES[1], {"spec": {"unschedulable": True}})
        apps = client.AppsV1Api(api)
        policy = client.PolicyV1Api(api)
        for name, (replicas, budget) in WORKLOADS.items():
            await apps.create_namespaced_deployment(NAMESPACE, _deployment(name, replicas))
            await policy.create_namespaced_pod_disruption_budget(
                NAMESPACE,
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"selector": {"matchLabels": {"app": name}}, **budget},
                },
            )
        await apps.create_namespaced_daemon_set(NAMESPACE, _daemonset())
        total = sum(replicas for replicas, _ in WORKLOADS.values())
        await _wait(lambda: _all_ready(core, NODES[0], total + 1), "100 pods Ready")
        budgets = Reflector(
            RawApi(api),
            f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets",
            lambda obj: obj.get("status") or {},
            name="bench-pdbs",
            on_change=watch.seen,
        )
        task = asyncio.create_task(budgets.run())
        timings: dict[str, list[float]] = {"molt": [], "kubectl": []}
        order = []
        for index in range(ROUNDS):
            pair = ["molt", "kubectl"] if index % 2 == 0 else ["kubectl", "molt"]
            order.extend(pair)
        source, target = NODES
        try:
            for tool in order:
                await core.patch_node(target, {"spec": {"unschedulable": False}})
                await _wait(lambda t=target: _all_ready(core, t, 1), "the DaemonSet pod on target")
                watch.counting = True
                started = time.monotonic()
                result = await asyncio.to_thread(
                    subprocess.run,
                    _drain_command(tool, source, kubeconfig, kubectl),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                elapsed = time.monotonic() - started
                watch.counting = False
                if result.returncode != 0:
                    raise RuntimeError(f"{tool} drain failed: {result.stderr[-2000:]}")
                left = [
                    p.metadata.name
                    for p in await _pods_on(core, source)
                    if p.metadata.deletion_timestamp is None
                    and not any(o.kind == "DaemonSet" for o in p.metadata.owner_references or [])
                ]
                if left:
                    raise RuntimeError(f"{tool} left pods behind on {source}: {left[:5]}")
                timings[tool].append(elapsed)
                print(f"  {tool:7s} drained {source} in {elapsed:5.1f}s")
                await _wait(lambda t=target: _all_ready(core, t, total + 1), "pods Ready again")
                source, target = target, source
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    print(f"  PDB violations seen by the watch: {watch.violations}")
    return timings


def run() -> None:
    print(
        "Drain: molt drain vs kubectl drain, 100 pods of 4 Deployments under PDBs + a "
        f"DaemonSet pod, {ROUNDS} rounds each, order alternated"
    )
    kubectl = ensure_binaries().kubectl
    with sandbox() as box:
        timings = asyncio.run(_bench(box.kubeconfig, kubectl))
    molt = statistics.median(timings["molt"])
    kubectl_median = statistics.median(timings["kubectl"])
    ratio = molt / kubectl_median
    print(
        f"  median molt {molt:.1f}s, kubectl {kubectl_median:.1f}s: ratio {ratio:.2f} "
        f"(goal <= {GOAL:.2f}) {'met' if ratio <= GOAL else 'NOT met'}"
    )


if __name__ == "__main__":
    run()
