"""``molt drain NODE`` against the real control plane: it empties a node through the
Eviction API within its PDB, and when it cannot, it says which pods block and why."""

from __future__ import annotations

import asyncio
import sys
import uuid

from kubernetes_asyncio import client

from tests.conftest import RunningSandbox
from tests.support.builders import deployment, kwok_node, pdb
from tests.support.waiting import eventually


async def _molt_drain(sandbox: RunningSandbox, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "molt.cli.main",
        "drain",
        f"--kubeconfig={sandbox.kubeconfig}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return int(process.returncode or 0), out.decode()


async def _running_on(kube: client.ApiClient, namespace: str, node: str) -> int:
    pods = await client.CoreV1Api(kube).list_namespaced_pod(
        namespace, field_selector=f"spec.nodeName={node}"
    )
    return sum(
        1
        for p in pods.items
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
    )


async def test_drain_empties_a_node_within_its_pdb_and_reports_pods_it_must_not_force(
    sandbox: RunningSandbox, kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    apps = client.AppsV1Api(kube)
    policy = client.PolicyV1Api(kube)
    suffix = uuid.uuid4().hex[:5]
    easy, stuck, spare = (f"drain-{kind}-{suffix}" for kind in ("easy", "stuck", "spare"))
    await core.create_node(kwok_node(easy, labels={"drain-test": suffix}))
    await core.create_node(kwok_node(stuck))
    # Three replicas on `easy`; one PDB lets one go at a time.
    await apps.create_namespaced_deployment(
        namespace, deployment("web", namespace, 3, node_selector={"drain-test": suffix})
    )
    await policy.create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    # On `stuck`, a pod that two PDBs cover: the Eviction API answers 500 for it.
    await apps.create_namespaced_deployment(
        namespace,
        deployment("dual", namespace, 1, node_selector={"kubernetes.io/hostname": stuck}),
    )
    for name in ("dual-a", "dual-b"):
        await policy.create_namespaced_pod_disruption_budget(
            namespace, pdb(name, namespace, "dual", max_unavailable=1)
        )
    await eventually(lambda: _count(kube, namespace, easy, 3), what="three pods on easy")
    await eventually(lambda: _count(kube, namespace, stuck, 1), what="the dual pod")
    # Evicted pods find room on `spare`, which joins only now.
    await core.create_node(kwok_node(spare, labels={"drain-test": suffix}))

    code, out = await _molt_drain(sandbox, easy, "--timeout=90s")
    assert code == 0, out
    assert f"drained {easy}" in out
    assert (await core.read_node(easy)).spec.unschedulable is True
    assert await _running_on(kube, namespace, easy) == 0

    code, out = await _molt_drain(sandbox, stuck, "--timeout=8s")
    assert code == 1, out
    assert "more than one PodDisruptionBudget" in out
    assert await _running_on(kube, namespace, stuck) == 1

    # A PDB that allows nothing: the same words the controller writes in molt.dev/blocked.
    full = f"drain-full-{suffix}"
    await core.create_node(kwok_node(full))
    await apps.create_namespaced_deployment(
        namespace, deployment("db", namespace, 1, node_selector={"kubernetes.io/hostname": full})
    )
    await policy.create_namespaced_pod_disruption_budget(
        namespace, pdb("db-all", namespace, "db", min_available=1)
    )
    await eventually(lambda: _count(kube, namespace, full, 1), what="the db pod")
    await eventually(lambda: _pdb_current(kube, namespace, "db-all"), what="the PDB's status")
    code, out = await _molt_drain(sandbox, full, "--timeout=5s")
    assert code == 1, out
    assert "PodDisruptionBudget db-all (allowed disruptions: 0)" in out, out

    code, out = await _molt_drain(sandbox, "no-such-node")
    assert code == 2
    assert "not found" in out


async def _count(kube: client.ApiClient, namespace: str, node: str, count: int) -> bool:
    return await _running_on(kube, namespace, node) >= count


async def _pdb_current(kube: client.ApiClient, namespace: str, name: str) -> bool:
    found = await client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget(name, namespace)
    return bool(found.status) and found.status.current_healthy == 1
