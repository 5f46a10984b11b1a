"""The controller at fleet scale: 2,000 kwok nodes and 20,000 pods, then a 10 % rotation;
and one replica's sustained replacement throughput on 500 nodes.

``run``: registers 2,000 kwok nodes (in concurrent batches) in one InstanceGroup and binds
10 pods to each, straight onto its node (the scheduler, at its default 50 requests/s,
would need minutes more to place them; these stand for any bound pods: what the
controller caches and drains is the same), plus a Deployment scheduled normally under a
PodDisruptionBudget. Starts ``molt run``, lets it settle, and measures for a minute its
API requests by verb (the controller's own counters) and its resident memory (VmRSS).
Then every node is made past its max age under a 200-node in-flight budget and the
rotation is followed for at most ``ROTATION_CAP`` seconds: requests by verb, nodes
replaced, the most in flight at once, and, from a watch of the guarded Deployment's pods,
the fewest Ready ones (a PDB violation is fewer than its minAvailable). The full
rotation's lower bound is ceil(2,000 / 200) waves, each at least one boot long; the
capped run is compared with the time the same share of the bound would take.

``run_throughput``: 500 kwok nodes with 2 bound pods each, a 1 s boot and a 20 %
in-flight budget, every node past its max age: old nodes replaced per hour over a capped
window after the first completes, extrapolated to a day.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from bench.support import (
    api_requests,
    controller,
    create_molt_object,
    free_port,
    rss_mib,
    sandbox,
)
from molt.api import GROUP, VERSION
from molt.api.instancegroup import Template
from molt.api.labels import GROUP_LABEL, REVISION_LABEL, STATE_LABEL
from molt.cloud.kwok_nodes import kwok_node
from molt.kube.reader import connect
from molt.kube.transport import Json, RawApi
from molt.kube.watch import Reflector
from molt.policy.cells import template_revision

FLEET_NODES = 2000
PODS_PER_NODE = 10
IN_FLIGHT = 200
BOOT_SECONDS = 1
ROTATION_CAP = 300
MEASURE_SECONDS = 60
GUARDED_REPLICAS = 40
GUARDED_MIN_AVAILABLE = 36
THROUGHPUT_NODES = 500
THROUGHPUT_PODS_PER_NODE = 2
THROUGHPUT_BUDGET = "20%"
THROUGHPUT_CAP = 240
GROUP_NAME = "fleet"
NAMESPACE = "fleet"
ZONES = ("zone-a", "zone-b", "zone-c")
TEMPLATE: dict[str, Any] = {
    "instanceTypes": ["m5.large"],
    "kwok": {"bootDelay": f"{BOOT_SECONDS}s"},
}

RSS_GOAL_MIB = 300
THROUGHPUT_GOAL_PER_DAY = 10_000


def _per_minute(before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    delta = {verb: after.get(verb, 0) - before.get(verb, 0) for verb in after}
    shown = ", ".join(
        f"{verb} {count * 60 / seconds:.1f}" for verb, count in sorted(delta.items()) if count
    )
    return shown or "none"


async def _gather_in_batches(jobs: list[Callable[[], Any]], parallel: int) -> None:
    semaphore = asyncio.Semaphore(parallel)

    async def one(job: Callable[[], Any]) -> None:
        async with semaphore:
            for attempt in range(5):
                try:
                    await job()
                    return
                except client.ApiException as error:
                    if error.status == 409:  # created by an attempt that timed out
                        return
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1 + attempt)

    await asyncio.gather(*(one(job) for job in jobs))


def _bare_pod(name: str, node: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bulk"}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        },
    }


async def _install(
    api: client.ApiClient, nodes: int, pods_per_node: int, budget: int | str, guarded: bool
) -> None:
    """The group's nodes (young: no policy selects them yet), its pods, the group and a
    policy that does not select anything until ``_expire`` lowers its max age."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    launched = datetime.now(UTC) - timedelta(hours=1)
    revision = template_revision(Template.model_validate(TEMPLATE))
    names = [f"{GROUP_NAME}-{i:05d}" for i in range(nodes)]

    def node_job(index: int, name: str) -> Callable[[], Any]:
        labels = {
            GROUP_LABEL: GROUP_NAME,
            REVISION_LABEL: revision,
            "topology.kubernetes.io/zone": ZONES[index % len(ZONES)],
        }
        return lambda: core.create_node(kwok_node(name, labels=labels, launched_at=launched))

    started = time.monotonic()
    await _gather_in_batches([node_job(i, n) for i, n in enumerate(names)], 32)
    print(f"  registered {nodes} kwok nodes in {time.monotonic() - started:.0f}s")
    await core.create_namespace({"metadata": {"name": NAMESPACE}})
    await create_molt_object(
        custom,
        "InstanceGroup",
        GROUP_NAME,
        {
            "provider": "kwok",
            "minSize": nodes,
            "maxSize": nodes + IN_FLIGHT,
            "zones": list(ZONES),
            "template": TEMPLATE,
        },
    )
    await create_molt_object(
        custom,
        "TerminationPolicy",
        GROUP_NAME,
        {
            "nodeSelector": {"matchLabels": {GROUP_LABEL: GROUP_NAME}},
            "rules": {"maxAge": "48h"},
            "budgets": [{"maxInFlight": budget, "scope": "Cluster"}],
            "drain": {"timeout": "10m"},
        },
    )
    # Pods need the namespace's default ServiceAccount, which the controller-manager makes.
    for _ in range(300):
        accounts = await core.list_namespaced_service_account(NAMESPACE)
        if any(a.metadata.name == "default" for a in accounts.items):
            break
        await asyncio.sleep(0.2)
    if guarded:
        # Before the bulk pods: kwok starts pods in the order they come, so a guarded
        # Deployment created behind 20,000 of them is not Ready for many minutes.
        await _install_guarded(api)
    started = time.monotonic()

    def pod_job(name: str, node: str) -> Callable[[], Any]:
        return lambda: core.create_namespaced_pod(NAMESPACE, _bare_pod(name, node))

    await _gather_in_batches(
        [pod_job(f"{node}-{i}", node) for node in names for i in range(pods_per_node)], 48
    )
    print(f"  bound {nodes * pods_per_node} pods in {time.monotonic() - started:.0f}s")


async def _install_guarded(api: client.ApiClient) -> None:
    labels = {"app": "guarded"}
    await client.AppsV1Api(api).create_namespaced_deployment(
        NAMESPACE,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "guarded"},
            "spec": {
                "replicas": GUARDED_REPLICAS,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
                    },
                },
            },
        },
    )
    await client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        NAMESPACE,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "guarded"},
            "spec": {"minAvailable": GUARDED_MIN_AVAILABLE, "selector": {"matchLabels": labels}},
        },
    )


async def _expire(api: client.ApiClient) -> None:
    """Every node of the group is past its max age from now on."""
    await client.CustomObjectsApi(api).patch_cluster_custom_object(
        GROUP,
        VERSION,
        "terminationpolicies",
        GROUP_NAME,
        {"spec": {"rules": {"maxAge": "30m"}}},
        _content_type="application/merge-patch+json",
    )


@dataclass
class PdbWatch:
    """The guarded Deployment's Ready, undeleted pods, from a watch: the fewest at once."""

    ready: set[str] = field(default_factory=set)
    fewest: int | None = None
    armed: bool = False

    def changed(self, key: str, _old: Any, new: bool | None) -> None:
        if new:
            self.ready.add(key)
        else:
            self.ready.discard(key)
        if len(self.ready) >= GUARDED_REPLICAS:
            self.armed = True
        if self.armed:
            count = len(self.ready)
            self.fewest = count if self.fewest is None else min(self.fewest, count)


def _ready(raw: Json) -> bool:
    meta = raw.get("metadata") or {}
    conditions = (raw.get("status") or {}).get("conditions") or []
    return meta.get("deletionTimestamp") is None and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )


@dataclass
class NodeWatch:
    """The group's nodes from a watch: which original ones are gone, and the pipeline."""

    originals: set[str] = field(default_factory=set)
    gone: dict[str, float] = field(default_factory=dict)
    in_pipeline: set[str] = field(default_factory=set)
    most_in_pipeline: int = 0
    all_gone: asyncio.Event = field(default_factory=asyncio.Event)

    def changed(self, key: str, _old: Any, new: str | None) -> None:
        if new is None:
            self.in_pipeline.discard(key)
            if key in self.originals:
                self.gone.setdefault(key, time.monotonic())
                if len(self.gone) == len(self.originals):
                    self.all_gone.set()
            return
        if new:
            self.in_pipeline.add(key)
            self.most_in_pipeline = max(self.most_in_pipeline, len(self.in_pipeline))
        else:
            self.in_pipeline.discard(key)


def _state(raw: Json) -> str:
    return str(((raw.get("metadata") or {}).get("labels") or {}).get(STATE_LABEL) or "")


async def _follow(
    api: client.ApiClient, pdbs: PdbWatch, nodes: NodeWatch
) -> tuple[list[asyncio.Task[None]], Reflector[str]]:
    raw = RawApi(api)
    node_cache: Reflector[str] = Reflector(
        raw,
        "/api/v1/nodes",
        _state,
        name="bench-nodes",
        label_selector=f"{GROUP_LABEL}={GROUP_NAME}",
        on_change=nodes.changed,
    )
    pod_cache: Reflector[bool] = Reflector(
        raw,
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        _ready,
        name="bench-guarded",
        label_selector="app=guarded",
        on_change=pdbs.changed,
    )
    tasks = [asyncio.create_task(node_cache.run()), asyncio.create_task(pod_cache.run())]
    await asyncio.wait_for(node_cache.synced.wait(), 120)
    await asyncio.wait_for(pod_cache.synced.wait(), 120)
    nodes.originals = set(node_cache.store)
    return tasks, node_cache


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _fleet(kubeconfig: Path) -> None:
    port = free_port()
    async with await connect(str(kubeconfig)) as api:
        started = time.monotonic()
        await _install(api, FLEET_NODES, PODS_PER_NODE, IN_FLIGHT, guarded=True)
        pdbs, nodes = PdbWatch(), NodeWatch()
        tasks, _ = await _follow(api, pdbs, nodes)
        for _ in range(600):
            if pdbs.armed:
                break
            await asyncio.sleep(0.5)
        print(
            f"  fleet up in {time.monotonic() - started:.0f}s "
            f"({len(pdbs.ready)} of {GUARDED_REPLICAS} guarded pods Ready)"
        )
        with controller(
            kubeconfig, f"--metrics-port={port}", "--metrics-address=127.0.0.1"
        ) as molt:
            await asyncio.sleep(45)  # sync the caches (20,000 pods), write statuses, settle
            startup = api_requests(port)
            rss = []
            for _ in range(MEASURE_SECONDS // 5):
                await asyncio.sleep(5)
                rss.append(rss_mib(molt.pid))
            steady = api_requests(port)
            print(
                f"steady state, {FLEET_NODES} nodes + {FLEET_NODES * PODS_PER_NODE} pods: "
                f"API requests/min by verb: {_per_minute(startup, steady, MEASURE_SECONDS)} "
                f"(goal ~0 list, watch only); controller RSS {max(rss):.0f} MiB "
                f"(max of {len(rss)} samples; goal < {RSS_GOAL_MIB} MiB); start-up sent "
                + ", ".join(f"{verb} {count:.0f}" for verb, count in sorted(startup.items()))
            )
            await _expire(api)
            began = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nodes.all_gone.wait(), ROTATION_CAP)
            spent = time.monotonic() - began
            during = api_requests(port)
            rss.append(rss_mib(molt.pid))
        await _stop(tasks)
    waves = math.ceil(FLEET_NODES / IN_FLIGHT)
    bound = waves * BOOT_SECONDS
    replaced = len(nodes.gone)
    share_bound = bound * replaced / FLEET_NODES
    if not pdbs.armed:
        verdict = f"not measured: the Deployment never had all {GUARDED_REPLICAS} pods Ready"
    elif pdbs.fewest is not None and pdbs.fewest < GUARDED_MIN_AVAILABLE:
        verdict = "VIOLATED"
    else:
        verdict = "0 violations"
    print(
        f"rotation, maxInFlight {IN_FLIGHT} ({IN_FLIGHT * 100 // FLEET_NODES} %), boot "
        f"{BOOT_SECONDS}s, capped at {ROTATION_CAP}s: {replaced} of {FLEET_NODES} nodes replaced "
        f"in {spent:.0f}s, at most {nodes.most_in_pipeline} in flight (budget {IN_FLIGHT}); "
        f"lower bound of the whole rotation {bound}s ({waves} waves x {BOOT_SECONDS}s boot), "
        f"{share_bound:.1f}s for the share done; requests/min by verb during it: "
        f"{_per_minute(steady, during, spent)}; RSS after {rss[-1]:.0f} MiB "
        f"(goal < {RSS_GOAL_MIB}); PDB (minAvailable {GUARDED_MIN_AVAILABLE} of "
        f"{GUARDED_REPLICAS}): fewest Ready {pdbs.fewest}, "
        f"{verdict} (goal 0 violations)"
    )


async def _throughput(kubeconfig: Path) -> None:
    async with await connect(str(kubeconfig)) as api:
        await _install(
            api, THROUGHPUT_NODES, THROUGHPUT_PODS_PER_NODE, THROUGHPUT_BUDGET, guarded=False
        )
        pdbs, nodes = PdbWatch(), NodeWatch()
        tasks, _ = await _follow(api, pdbs, nodes)
        with controller(kubeconfig, "--metrics-port=0"):
            await asyncio.sleep(20)
            await _expire(api)
            began = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nodes.all_gone.wait(), THROUGHPUT_CAP)
            ended = time.monotonic()
        await _stop(tasks)
    times = sorted(nodes.gone.values())
    if len(times) < 2:
        print(f"throughput: {len(times)} replacements in {THROUGHPUT_CAP}s, too few to rate")
        return
    # Sustained: from the first replacement done to the window's end (the first wave's
    # drain and launch are the ramp).
    window = (times[-1] if len(times) == THROUGHPUT_NODES else ended) - times[0]
    per_hour = (len(times) - 1) * 3600 / max(window, 1e-9)
    print(
        f"throughput of one replica, {THROUGHPUT_NODES} nodes x {THROUGHPUT_PODS_PER_NODE} pods, "
        f"boot {BOOT_SECONDS}s, budget {THROUGHPUT_BUDGET}: {len(times)} replaced in "
        f"{ended - began:.0f}s (capped at {THROUGHPUT_CAP}s), sustained {per_hour:.0f}/hour "
        f"= {per_hour * 24:.0f}/day (goal > {THROUGHPUT_GOAL_PER_DAY}/day); most in flight "
        f"{nodes.most_in_pipeline}"
    )


def run() -> None:
    with sandbox() as box:
        asyncio.run(_fleet(box.kubeconfig))


def run_throughput() -> None:
    with sandbox() as box:
        asyncio.run(_throughput(box.kubeconfig))


if __name__ == "__main__":
    run()
    run_throughput()
