"""``molt run`` with Reapers against the real control plane: a pod stuck Terminating on a
dead node is force-deleted (after a dry run only reported it) while one on a healthy
node is never touched; a kwok node whose instance is gone is deleted while a dead node
whose instance exists is kept; a finished pod past its TTL goes, a Job's stays.

One kwok restart kills two nodes at once (about a minute until they turn Unknown), and
every assertion shares them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api import GROUP, VERSION
from molt.api.labels import KWOK_NODE_ANNOTATION
from tests.conftest import RunningSandbox
from tests.support.builders import kwok_node
from tests.support.controller import MoltProcess
from tests.support.waiting import eventually

HOLD = "molt.dev/test-hold"
"""A finalizer that keeps a deleted pod Terminating on a healthy node."""
HEARTBEAT = 2.0


async def _heartbeat(kube: client.ApiClient, node: str) -> None:
    """Keep ``node`` Ready without kwok: report Ready once, then renew its Lease, as a
    kubelet does. kwok would confirm a pod's deletion itself (removing its finalizers),
    so a pod held Terminating on a healthy node needs a node kwok does not run."""
    coordination = client.CoordinationV1Api(kube)
    now = datetime.now(UTC)
    await client.CoreV1Api(kube).patch_node_status(
        node,
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "the test's heartbeat",
                        "lastHeartbeatTime": now.isoformat(),
                        "lastTransitionTime": now.isoformat(),
                    }
                ]
            }
        },
    )
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40},
    }
    lease["spec"]["renewTime"] = datetime.now(UTC).isoformat(timespec="microseconds")
    await coordination.create_namespaced_lease("kube-node-lease", lease)
    while True:
        renewed = datetime.now(UTC).isoformat(timespec="microseconds")
        await coordination.patch_namespaced_lease(
            node, "kube-node-lease", {"spec": {"renewTime": renewed}}
        )
        await asyncio.sleep(HEARTBEAT)


def _node(name: str) -> dict[str, Any]:
    manifest = kwok_node(name)
    manifest["spec"]["providerID"] = f"kwok://{name}"
    return manifest


def _pod(name: str, node: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **meta},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
        },
    }


def _reaper(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Reaper",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "interval": "2s",
            **spec,
        },
    }


async def _exists(core: client.CoreV1Api, namespace: str, pod: str) -> bool:
    try:
        await core.read_namespaced_pod(pod, namespace)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def _node_exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        await core.read_node(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def _events(core: client.CoreV1Api, namespace: str, kind: str, name: str) -> list[str]:
    found = await core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}"
    )
    return [e.reason for e in found.items]


async def _status(kube: client.ApiClient, name: str) -> dict[str, Any]:
    found = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        GROUP, VERSION, "reapers", name
    )
    return dict(found.get("status") or {})


async def test_reapers_act_on_dead_nodes_and_finished_pods_and_nothing_else(
    kube: client.ApiClient,
    namespace: str,
    sandbox: RunningSandbox,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    suffix = uuid.uuid4().hex[:5]
    dead, ghost, healthy = f"dead-{suffix}", f"ghost-{suffix}", f"healthy-{suffix}"
    for name in (dead, ghost):
        await core.create_node(_node(name))
    held_up = _node(healthy)
    held_up["metadata"]["annotations"][KWOK_NODE_ANNOTATION] = "test-heartbeat"
    await core.create_node(held_up)
    heartbeat = asyncio.create_task(_heartbeat(kube, healthy))
    reapers = ["dry", "real"]
    try:

        async def ready(name: str) -> bool:
            found = await core.read_node(name)
            return any(
                c.type == "Ready" and c.status == "True" for c in found.status.conditions or []
            )

        for name in (dead, ghost, healthy):
            await eventually(lambda n=name: ready(n), what=f"{name} Ready")
        await core.create_namespaced_pod(namespace, _pod("stuck", dead))
        await core.create_namespaced_pod(namespace, _pod("held", healthy, finalizers=[HOLD]))
        await core.create_namespaced_pod(namespace, _pod("done", dead))
        # A Job's finished pod: owned by a (suspended, selector-less match) Job, not its
        # controller, so the Job controller leaves it alone and the GC keeps it.
        job = await client.BatchV1Api(kube).create_namespaced_job(
            namespace,
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "history"},
                "spec": {
                    "suspend": True,
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                        }
                    },
                },
            },
        )
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "history",
            "uid": job.metadata.uid,
        }
        await core.create_namespaced_pod(namespace, _pod("job-done", dead, ownerReferences=[owner]))
        # Two kubelets die at once: ``dead``'s machine is still there (kwok's annotation says
        # so), ``ghost``'s instance is gone (no kwok runs it any more).
        await core.patch_node(dead, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: "dead"}}})
        await core.patch_node(ghost, {"metadata": {"annotations": {KWOK_NODE_ANNOTATION: None}}})
        await asyncio.to_thread(sandbox.sandbox.restart, "kwok", lambda _: None)
        await core.delete_namespaced_pod("stuck", namespace, grace_period_seconds=1)
        await core.delete_namespaced_pod("held", namespace, grace_period_seconds=1)
        for pod in ("done", "job-done"):  # no kwok runs their node any more to say otherwise
            await core.patch_namespaced_pod_status(
                pod, namespace, {"status": {"phase": "Succeeded"}}
            )

        async def unknown(name: str) -> bool:
            found = await core.read_node(name)
            return any(
                c.type == "Ready" and c.status != "True" for c in found.status.conditions or []
            )

        await custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "reapers",
            _reaper("dry", namespace, stuckPods={"after": "5s"}, dryRun=True),
        )
        molt = run_molt()
        for name in (dead, ghost):
            await eventually(
                lambda n=name: unknown(n), within=150, interval=1, what=f"{name} NotReady"
            )

        async def dry_reported() -> bool:
            return (await _status(kube, "dry")).get("reaped", {}).get("stuckPods") == 1

        await eventually(dry_reported, within=30, interval=0.5, what="the dry run's report")
        assert "WouldReap" in await _events(core, namespace, "Pod", "stuck")
        assert await _exists(core, namespace, "stuck"), "a dry run deleted the pod"

        await custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "reapers",
            _reaper(
                "real",
                namespace,
                stuckPods={"after": "5s"},
                ghostNodes={"after": "5s"},
                finishedPods={"ttl": "5s"},
            ),
        )
        await eventually(
            lambda: _gone(core, namespace, "stuck"),
            within=30,
            interval=0.5,
            what="stuck pod reaped",
        )
        await eventually(
            lambda: _node_gone(core, ghost), within=30, interval=0.5, what="ghost node reaped"
        )
        await eventually(
            lambda: _gone(core, namespace, "done"),
            within=30,
            interval=0.5,
            what="finished pod reaped",
        )
        await asyncio.sleep(6)  # three more passes: nothing else may go

        assert await _node_exists(core, dead), "a node whose instance exists was deleted"
        assert await _node_exists(core, healthy)
        assert await _exists(core, namespace, "held"), "the pod on the healthy node was deleted"
        assert await _exists(core, namespace, "job-done"), "a Job's finished pod was deleted"
        for pod in ("held", "job-done"):
            reasons = await _events(core, namespace, "Pod", pod)
            assert not {"Reaped", "WouldReap"} & set(reasons), (pod, reasons)
        assert "Reaped" in await _events(core, namespace, "Pod", "stuck")
        status = await _status(kube, "real")
        assert status["reaped"] == {"stuckPods": 1, "finishedPods": 1, "ghostNodes": 1}, status
        assert status.get("lastReapTime")
        assert (await _status(kube, "dry"))["reaped"]["stuckPods"] == 1
        listing = sandbox.kubectl("get", "rp", "real")
        header = listing.stdout.splitlines()[0].split()
        for column in ("STUCK-PODS", "FINISHED-PODS", "GHOST-NODES", "LAST-REAP"):
            assert column in header, listing.stdout
        assert molt.alive(), molt.log()
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        with contextlib.suppress(ApiException):
            await client.CoordinationV1Api(kube).delete_namespaced_lease(healthy, "kube-node-lease")
        for name in reapers:
            try:
                await custom.delete_cluster_custom_object(GROUP, VERSION, "reapers", name)
            except ApiException as error:
                if error.status != 404:
                    raise
        try:
            await core.patch_namespaced_pod("held", namespace, {"metadata": {"finalizers": None}})
        except ApiException as error:
            if error.status != 404:
                raise


async def _gone(core: client.CoreV1Api, namespace: str, pod: str) -> bool:
    return not await _exists(core, namespace, pod)


async def _node_gone(core: client.CoreV1Api, name: str) -> bool:
    return not await _node_exists(core, name)
