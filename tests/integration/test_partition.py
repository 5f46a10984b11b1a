"""A network partition between the leader and the API server: two ``molt run
--leader-elect`` replicas, each reaching the API server through its own loopback TCP
proxy and as its own ServiceAccount, rotate a small fleet under a PDB. The leader's proxy
is blackholed mid-rotation. The standby takes over and finishes the rotation; the API
server's audit log shows that no write of the old leader was received after its fence
(its last successful Lease renewal plus the renew deadline) or after the takeover, and,
once the partition heals and the old replica is restarted, that it writes nothing more.

A sandbox of its own, since the shared one runs without an audit log (as most clusters
do): the audit policy logs every write to Leases, Nodes, Pods (evictions included),
Events and Molt's resources.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes_asyncio import client

from molt.sandbox.binaries import ensure_binaries
from molt.sandbox.cluster import Sandbox
from tests.support.builders import deployment, pdb
from tests.support.controller import FleetWatch, MoltProcess
from tests.support.install import api_client, write_token_kubeconfig
from tests.support.kube_fleet import (
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    node_events,
    ready_nodes,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually

LEASE_SECONDS = 8.0
RENEW_DEADLINE = LEASE_SECONDS * 2 / 3
"""``molt run`` renews within two thirds of the lease duration or steps down; its fence
(``molt.kube.leader.Fence``) stops passing at that same moment, measured from when the
last successful renewal was *sent*: at the latest ``RENEW_DEADLINE`` after the API server
received that renewal."""
LEASE_NAMESPACE, LEASE_NAME = "kube-system", "molt-controller"
ACCOUNTS_NAMESPACE = "molt-replicas"
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "rules": [
        {
            "level": "Metadata",
            "verbs": WRITE_VERBS,
            "resources": [
                {"group": "", "resources": ["nodes", "nodes/status", "pods", "pods/eviction"]},
                {"group": "", "resources": ["events"]},
                {"group": "events.k8s.io", "resources": ["events"]},
                {"group": "coordination.k8s.io", "resources": ["leases"]},
                {"group": "molt.dev"},
            ],
        },
        {"level": "None"},
    ],
}


@dataclass(frozen=True)
class AuditedWrite:
    """One write request as the API server's audit log records it."""

    audit_id: str
    user: str
    verb: str
    resource: str
    namespace: str
    name: str
    received: datetime
    code: int | None
    """The response code; None when the log has no ResponseComplete for it."""

    @property
    def on_lease(self) -> bool:
        return self.resource == "leases" and (self.namespace, self.name) == (
            LEASE_NAMESPACE,
            LEASE_NAME,
        )

    @property
    def succeeded(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    def __str__(self) -> str:
        where = "/".join(p for p in (self.namespace, self.resource, self.name) if p)
        return f"{self.received.isoformat()} {self.verb} {where} -> {self.code}"


def read_audit_log(path: Path) -> list[AuditedWrite]:
    """Every request in the log, one entry per audit ID (its stages merged)."""
    stages: dict[str, dict[str, object]] = {}
    codes: dict[str, int] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        stages.setdefault(event["auditID"], event)
        status = event.get("responseStatus") or {}
        if event["stage"] in ("ResponseComplete", "Panic") and "code" in status:
            codes[event["auditID"]] = int(status["code"])
    writes = []
    for audit_id, event in stages.items():
        ref = event.get("objectRef") or {}
        assert isinstance(ref, dict)
        user = event["user"]
        assert isinstance(user, dict)
        resource = str(ref.get("resource", ""))
        if ref.get("subresource"):
            resource += f"/{ref['subresource']}"
        writes.append(
            AuditedWrite(
                audit_id=audit_id,
                user=str(user.get("username", "")),
                verb=str(event["verb"]),
                resource=resource,
                namespace=str(ref.get("namespace", "")),
                name=str(ref.get("name", "")),
                received=datetime.fromisoformat(str(event["requestReceivedTimestamp"])),
                code=codes.get(audit_id),
            )
        )
    writes.sort(key=lambda w: w.received)
    return writes


@dataclass
class Audited:
    box: Sandbox
    api: client.ApiClient
    audit_log: Path
    server: str
    """The API server's host:port."""


@pytest.fixture
async def audited(tmp_path: Path) -> AsyncIterator[Audited]:
    policy = tmp_path / "audit-policy.yaml"
    policy.write_text(yaml.safe_dump(AUDIT_POLICY))
    audit_log = tmp_path / "audit.log"
    box = Sandbox(
        tmp_path / "audited",
        apiserver_flags=(
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            # Each event is written before the request goes on: the file is complete.
            "--audit-log-mode=blocking",
            "--audit-log-format=json",
        ),
    )
    await asyncio.to_thread(box.up, lambda _: None, ensure_binaries())
    try:
        server = yaml.safe_load(box.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        api = await api_client(box.kubeconfig)
        async with api:
            yield Audited(box, api, audit_log, urlsplit(server).netloc)
    finally:
        await asyncio.to_thread(box.down, lambda _: None)


async def replica_kubeconfig(
    api: client.ApiClient, admin: Path, account: str, proxy: TcpProxy, path: Path
) -> str:
    """A kubeconfig holding only a token of ServiceAccount ``account`` (bound to
    cluster-admin: the chart's RBAC is test_install's subject) whose server is ``proxy``;
    the audit log's user name for it."""
    core = client.CoreV1Api(api)
    await core.create_namespaced_service_account(
        ACCOUNTS_NAMESPACE, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    await client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
        client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=f"partition-{account}"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
            ),
            subjects=[
                client.RbacV1Subject(
                    kind="ServiceAccount", name=account, namespace=ACCOUNTS_NAMESPACE
                )
            ],
        )
    )
    issued = await core.create_namespaced_service_account_token(
        account,
        ACCOUNTS_NAMESPACE,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    )
    _write_kubeconfig(admin, account, issued.status.token, proxy, path)
    return f"system:serviceaccount:{ACCOUNTS_NAMESPACE}:{account}"


def _write_kubeconfig(admin: Path, user: str, token: str, proxy: TcpProxy, path: Path) -> None:
    write_token_kubeconfig(admin, user, token, path)
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://{proxy.address}"
    path.write_text(yaml.safe_dump(config, sort_keys=False))


async def lease_holder(api: client.ApiClient) -> str:
    try:
        lease = await client.CoordinationV1Api(api).read_namespaced_lease(
            LEASE_NAME, LEASE_NAMESPACE
        )
    except client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


async def test_a_partitioned_leader_stops_writing_at_its_fence_and_does_not_resume(
    audited: Audited, tmp_path: Path
) -> None:
    api, box = audited.api, audited.box
    core = client.CoreV1Api(api)
    host, port = audited.server.rsplit(":", 1)
    namespace = f"t-{uuid.uuid4().hex[:6]}"
    for name in (ACCOUNTS_NAMESPACE, namespace):
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    group = "partition"
    old = await install_old_fleet(api, group, nodes=3, age=timedelta(hours=60))
    processes: list[MoltProcess] = []
    watch = FleetWatch()
    proxies = {name: TcpProxy(host, int(port)) for name in ("a", "b")}
    try:
        users: dict[str, str] = {}
        kubeconfigs: dict[str, Path] = {}
        for name, proxy in proxies.items():
            await proxy.start()
            kubeconfigs[name] = tmp_path / f"replica-{name}.kubeconfig"
            users[name] = await replica_kubeconfig(
                api, box.kubeconfig, f"replica-{name}", proxy, kubeconfigs[name]
            )

        def replica(name: str) -> MoltProcess:
            process = MoltProcess(
                kubeconfigs[name],
                tmp_path / f"replica-{name}-{len(processes)}.log",
                "--leader-elect",
                f"--lease-duration={LEASE_SECONDS:g}s",
                f"--identity=replica-{name}",
            )
            processes.append(process)
            return process

        await eventually(lambda: has_ready_nodes(api, group, 3), what="three Ready nodes")
        await eventually(
            lambda: _has_default_account(api, namespace), what="the namespace's ServiceAccount"
        )
        selector = {"molt.dev/instance-group": group}
        await client.AppsV1Api(api).create_namespaced_deployment(
            namespace, deployment("web", namespace, 4, node_selector=selector)
        )
        await client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
            namespace, pdb("web", namespace, "web", max_unavailable=1)
        )
        await watch.start(api, namespace, "web", 4, group)
        await eventually(lambda: has_ready_replicas(api, namespace, 4), what="four replicas")

        a = replica("a")
        await eventually(lambda: a.logged("controller.leading"), within=30, what="a leads")
        b = replica("b")
        await eventually(lambda: b.logged("caches.synced"), within=30, what="b's caches")
        assert await lease_holder(api) == "replica-a"
        await install_policy(
            api, group, group, rules={"maxAge": "48h"}, budgets=[{"maxInFlight": 1}]
        )
        # Mid-rotation: the leader is evicting and writing its progress on the node.
        await eventually(
            lambda: _in_state(api, group, "draining"), interval=0.05, what="a draining node"
        )

        proxies["a"].blackhole()
        blackholed_at = time.time()
        await eventually(
            lambda: _holder_is(api, "replica-b"), within=4 * LEASE_SECONDS, what="b takes over"
        )
        took_over_after = time.time() - blackholed_at
        # Cut off, the old leader steps down at its renew deadline and exits (code 3).
        await eventually(lambda: _exited(a), within=2 * LEASE_SECONDS, what="the old leader's exit")
        assert a.process.returncode == 3, a.log()
        # The rotation goes on under b before the partition heals.
        await eventually(lambda: b.logged("node.terminated"), within=60, what="b's termination")

        proxies["a"].heal()
        healed_at = time.time()
        # Kubernetes would restart the exited replica: it comes back through the healed
        # network, with the same identity, and must stay a standby.
        again = replica("a")
        await eventually(lambda: again.logged("caches.synced"), within=30, what="a's caches")

        async def rotated() -> bool:
            ready = await ready_nodes(api, group)
            return len(ready) == 3 and not set(ready) & set(old)

        await eventually(rotated, within=120, interval=1, what="the rotation")
        # A few of a's election rounds after the rotation: still a standby.
        await asyncio.sleep(2 * LEASE_SECONDS / 7.5 + 1)
        assert await lease_holder(api) == "replica-b"
        assert again.alive(), again.log()
        assert "controller.leading" not in again.log()
    finally:
        await watch.stop()
        for process in processes:
            process.stop()
        for proxy in proxies.values():
            await proxy.stop()

    writes = read_audit_log(audited.audit_log)
    by_a = [w for w in writes if w.user == users["a"]]
    by_b = [w for w in writes if w.user == users["b"]]
    renewals = [w.received for w in by_a if w.on_lease and w.succeeded]
    takeover = min(w.received for w in by_b if w.on_lease and w.succeeded)
    last_renewal = max(r for r in renewals if r < takeover)
    fence = last_renewal + timedelta(seconds=RENEW_DEADLINE)
    caught = proxies["a"].stats.requests
    print(
        f"blackhole +0.0s; a's last renewal {last_renewal.timestamp() - blackholed_at:+.2f}s, "
        f"fence {fence.timestamp() - blackholed_at:+.2f}s, "
        f"takeover {takeover.timestamp() - blackholed_at:+.2f}s "
        f"(b saw it {took_over_after:.1f}s in), heal {healed_at - blackholed_at:+.1f}s; "
        f"a sent {caught.held} B into the partition: {caught.dropped} B reset, "
        f"{caught.delivered_late} B delivered on heal; writes by a {len(by_a)}, by b {len(by_b)}"
    )
    assert fence < takeover, "b took over before a's fence could have fallen"
    assert any(w.resource == "nodes" and w.received < fence for w in by_a), "a was writing"
    assert any(w.resource.startswith("nodes") and w.received > takeover for w in by_b)
    # Nothing at all from a between its fence and the heal (the takeover lies between).
    # After the heal, the restarted replica may try the Lease and be refused (a 409: a
    # failed acquisition); it writes nothing else, and never takes the Lease while b
    # renews it.
    late = [w for w in by_a if w.received > fence and w.received.timestamp() < healed_at]
    assert not late, "writes by the old leader after its fence:\n" + "\n".join(map(str, late))
    healed = [w for w in by_a if w.received.timestamp() >= healed_at]
    assert all(w.on_lease and not w.succeeded for w in healed), "\n".join(map(str, healed))
    # And the proxy's own account: every byte a sent into the partition was reset by a,
    # none reached the API server on heal.
    assert caught.held > 0
    assert caught.delivered_late == 0, caught

    # The rotation: each old node replaced once, one node in flight at a time, no PDB
    # broken.
    for name in old:
        reasons = Counter(reason for reason, _ in await node_events(api, name))
        assert reasons["Selected"] == 1, (name, reasons)
        assert reasons["InstanceTerminated"] <= 1, (name, reasons)
    nodes = await core.list_node(label_selector=f"molt.dev/instance-group={group}")
    assert len(nodes.items) == 3
    assert watch.max_in_pipeline == 1, watch.peak
    assert all(n == 1 for n in watch.pipeline_entries.values()), watch.pipeline_entries
    assert set(watch.pipeline_entries) == set(old)
    assert watch.min_ready_pods is not None
    assert watch.min_ready_pods >= 3, watch.min_ready_pods
    assert not watch.cordoned_without_reason, watch.cordoned_without_reason


async def _has_default_account(api: client.ApiClient, namespace: str) -> bool:
    accounts = await client.CoreV1Api(api).list_namespaced_service_account(namespace)
    return any(a.metadata.name == "default" for a in accounts.items)


async def _in_state(api: client.ApiClient, group: str, state: str) -> list[str]:
    nodes = await client.CoreV1Api(api).list_node(
        label_selector=f"molt.dev/instance-group={group},molt.dev/state={state}"
    )
    return [n.metadata.name for n in nodes.items]


async def _holder_is(api: client.ApiClient, identity: str) -> bool:
    return await lease_holder(api) == identity


async def _exited(process: MoltProcess) -> bool:
    return not process.alive()
