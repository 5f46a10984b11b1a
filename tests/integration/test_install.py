"""The install: the Helm chart lints and renders for every option, ``deploy/molt.yaml`` is
its fresh render, its manifests apply to a real API server, and its RBAC is least
privilege. A full rotation completes as the chart's ServiceAccount with nothing but the
chart's roles; and every verb those roles grant, taken away on its own, makes the very
call Molt makes with it fail with 403, while with the chart's roles the same call passes.

The sandbox has no container runtime: the Deployment's pods are applied but never run
(kwok may pretend to run them on its nodes); ``molt run`` runs here as a process instead,
with a token of the chart's ServiceAccount.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from structlog.testing import capture_logs

from molt.actions.objects import read_config_map_key, read_job, read_secret_key
from molt.api import GROUP, VERSION, InstanceGroup, Reaper, TerminationPolicy, Watchdog
from molt.api.watchdog import ProbePodCheck
from molt.cloud.baremetal.inventory import Claim
from molt.cloud.baremetal.store import CLAIMS_CONFIGMAP, ClaimStore
from molt.cloud.kwok import KwokProvider
from molt.controllers.watchdog.checks import probe_pod_body
from molt.kube.leader import LeaderElector
from molt.kube.pods import BOUND, PODS
from molt.kube.state import GROUPS, NODES, POLICIES, REAPERS, WATCHDOGS
from molt.kube.transport import RawApi
from molt.kube.writes import KubeWrites
from molt.policy.snapshot import PodView
from molt.ports import EvictionOutcome, ObjectRef
from molt.sandbox.chart import default_manifests, documents, helm, template
from tests.conftest import RunningSandbox
from tests.support.builders import deployment, kwok_node, pdb
from tests.support.controller import MoltProcess
from tests.support.install import (
    CHART,
    REPO,
    Install,
    api_client,
    token_kubeconfig,
    wait_for_service_account,
)
from tests.support.kube_fleet import (
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    node_events,
    ready_nodes,
)
from tests.support.waiting import eventually

RBAC_KINDS = ("ClusterRole", "Role")


def _by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        found.setdefault(doc["kind"], []).append(doc)
    return found


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = _by_kind(docs)["Deployment"][0]["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


# -- the chart itself -------------------------------------------------------------------


def helm_lint(helm_path: Path, values: dict[str, Any] | None = None) -> str:
    """``helm lint --strict`` of the chart with ``values``; its output."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(values or {}, file)
        file.flush()
        return helm(helm_path, "lint", "--strict", str(CHART), "--values", file.name)


def test_the_chart_lints_and_renders_its_defaults_hardened(helm: Path) -> None:
    lint = helm_lint(helm)
    assert "0 chart(s) failed" in lint, lint
    docs = documents(template(helm, CHART))
    kinds = _by_kind(docs)
    assert sorted(kinds) == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )
    deployment_doc = kinds["Deployment"][0]
    assert deployment_doc["spec"]["replicas"] == 2
    pod = deployment_doc["spec"]["template"]["spec"]
    container = _container(docs)
    assert container["args"][:2] == ["run", "--leader-elect"]
    assert "--lease-namespace=molt" in container["args"]
    assert "--provider=kwok" in container["args"]
    assert not [a for a in container["args"] if a.startswith("--history")]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert kinds["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1
    assert {r["metadata"]["namespace"] for r in kinds["Role"]} == {"molt", "default", "kube-system"}
    for role in kinds["ClusterRole"] + kinds["Role"]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    # kwok launches by creating Nodes; only registration (aws) reads single nodes.
    assert _node_verbs(kinds["ClusterRole"][0]) == {"list", "watch", "patch", "delete", "create"}


def _node_verbs(role: dict[str, Any]) -> set[str]:
    return {
        verb for rule in role["rules"] if "nodes" in rule["resources"] for verb in rule["verbs"]
    }


def test_the_chart_renders_aws_irsa_history_and_a_service_monitor(helm: Path) -> None:
    values = {
        "providers": ["aws"],
        "aws": {"region": "eu-west-1", "roleArn": "arn:aws:iam::123456789012:role/molt"},
        "history": {"url": "postgresql://molt:secret@db.example:5432/molt"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "image": {"repository": "registry.example/molt", "tag": "1.2.3"},
        "replicas": 3,
    }
    lint = helm_lint(helm, values)
    assert "0 chart(s) failed" in lint, lint
    docs = documents(template(helm, CHART, values=values))
    kinds = _by_kind(docs)
    account = kinds["ServiceAccount"][0]
    role_arn = "arn:aws:iam::123456789012:role/molt"
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role_arn}
    container = _container(docs)
    assert container["image"] == "registry.example/molt:1.2.3"
    assert "--provider=aws" in container["args"]
    assert "--provider=kwok" not in container["args"]
    assert "--history=$(MOLT_HISTORY_URL)" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_REGION"]["value"] == "eu-west-1"
    assert env["MOLT_HISTORY_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "molt-history",
        "key": "url",
    }
    secret = kinds["Secret"][0]
    assert secret["stringData"] == {"url": "postgresql://molt:secret@db.example:5432/molt"}
    # The URL (it may hold a password) is in the Secret only, never in the pod spec.
    assert "secret@db" not in str(kinds["Deployment"])
    assert kinds["ServiceMonitor"][0]["spec"]["endpoints"][0]["port"] == "metrics"
    # Without kwok, Molt never creates Nodes nor reads the kwok fault settings.
    assert _node_verbs(kinds["ClusterRole"][0]) == {"list", "watch", "patch", "delete", "get"}
    assert {r["metadata"]["namespace"] for r in kinds["Role"]} == {"molt", "default"}

    existing = documents(
        template(helm, CHART, values={"history": {"existingSecret": "db-url", "secretKey": "dsn"}})
    )
    assert "Secret" not in _by_kind(existing)
    env = {e["name"]: e for e in _container(existing)["env"]}
    assert env["MOLT_HISTORY_URL"]["valueFrom"]["secretKeyRef"] == {"name": "db-url", "key": "dsn"}


def test_the_chart_renders_its_alerts_and_dashboard_when_asked(helm: Path) -> None:
    values = {
        "monitoring": {
            "prometheusRule": {"enabled": True, "labels": {"release": "kps"}},
            "dashboard": {"enabled": True},
        }
    }
    assert "0 chart(s) failed" in helm_lint(helm, values)
    kinds = _by_kind(documents(template(helm, CHART, values=values)))
    [rule] = kinds["PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert alerts == {r["alert"] for g in shipped["groups"] for r in g["rules"] if "alert" in r}
    assert {"MoltNodePastMaxAge", "MoltDrainBlockedOverAnHour"} <= alerts
    [dashboard] = [
        c for c in kinds["ConfigMap"] if c["metadata"]["labels"].get("grafana_dashboard")
    ]
    [body] = dashboard["data"].values()
    assert json.loads(body)["panels"]
    defaults = _by_kind(documents(template(helm, CHART)))
    assert "PrometheusRule" not in defaults


def test_deploy_molt_yaml_is_the_charts_fresh_render(helm: Path) -> None:
    committed = (REPO / "deploy" / "molt.yaml").read_text()
    assert committed == default_manifests(helm, CHART), "deploy/molt.yaml is stale: make manifests"


# -- against the API server ---------------------------------------------------------------


@pytest.fixture
def install(
    sandbox: RunningSandbox, helm: Path, namespace: str
) -> Iterator[Callable[..., Install]]:
    """Install releases of the chart into the test's namespace; all deleted afterwards."""
    made: list[Install] = []

    def make(**values: Any) -> Install:
        release = f"molt-{uuid.uuid4().hex[:6]}"
        found = Install(sandbox, helm, release, namespace, values)
        made.append(found)
        found.apply()
        return found

    yield make
    for found in made:
        found.delete()


async def test_the_rendered_manifests_apply_to_the_api_server(
    sandbox: RunningSandbox, kube: client.ApiClient, install: Callable[..., Install]
) -> None:
    release = install()
    deployment_doc = await client.AppsV1Api(kube).read_namespaced_deployment(
        release.release, release.namespace
    )
    assert deployment_doc.spec.replicas == 2
    rbac = client.RbacAuthorizationV1Api(kube)
    role = await rbac.read_cluster_role(release.release)
    assert role.rules, "the ClusterRole has no rules"
    await rbac.read_namespaced_role(f"{release.release}-events", "default")
    await rbac.read_namespaced_role(f"{release.release}-kwok-faults", "kube-system")
    # The chart's CRDs are the sandbox's; the API server accepts them as they are.
    crds = sandbox.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(CHART / "crds"))
    assert crds.returncode == 0, crds.stderr
    # And the committed manifests as a whole, CRDs included, moved into this namespace.
    whole = sandbox.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        stdin=(REPO / "deploy" / "molt.yaml")
        .read_text()
        .replace("namespace: molt\n", f"namespace: {release.namespace}\n"),
    )
    assert whole.returncode == 0, whole.stderr


async def test_helm_installs_and_uninstalls_the_chart(
    sandbox: RunningSandbox, kube: client.ApiClient, helm: Path, namespace: str, tmp_path: Path
) -> None:
    """The README's `helm install`, against the sandbox; helm's own files stay in tmp."""
    env = {
        **os.environ,
        "KUBECONFIG": str(sandbox.kubeconfig),
        **{
            f"HELM_{kind}_HOME": str(tmp_path / kind.lower())
            for kind in ("CACHE", "CONFIG", "DATA")
        },
    }
    release = f"molt-{uuid.uuid4().hex[:6]}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(helm), *args], env=env, capture_output=True, text=True, check=False, timeout=120
        )

    installed = run("install", release, str(CHART), "--namespace", namespace)
    try:
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert "STATUS: deployed" in installed.stdout, installed.stdout
        await client.RbacAuthorizationV1Api(kube).read_cluster_role(release)
    finally:
        removed = run("uninstall", release, "--namespace", namespace, "--wait")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    roles = await client.RbacAuthorizationV1Api(kube).list_cluster_role(
        label_selector=f"app.kubernetes.io/instance={release}"
    )
    assert not roles.items, "helm uninstall left the ClusterRole behind"
    # CRDs are helm's to install, never to delete: they stay for the next install.
    assert sandbox.kubectl("get", "crd", f"instancegroups.{GROUP}").returncode == 0


async def test_a_full_rotation_completes_with_only_the_charts_permissions(
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    install: Callable[..., Install],
    run_molt: Callable[..., MoltProcess],
    tmp_path: Path,
) -> None:
    release = install()
    await wait_for_service_account(kube, namespace, release.service_account)
    kubeconfig = await token_kubeconfig(
        kube, sandbox.kubeconfig, namespace, release.service_account, tmp_path / "sa.kubeconfig"
    )
    # The Deployment's own arguments, but no metrics port: run_molt turns it off.
    args = [a for a in release.container()["args"][1:] if not a.startswith("--metrics-port")]

    group = f"sa-{uuid.uuid4().hex[:5]}"
    old = await install_old_fleet(kube, group, nodes=2, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, 2), what="two Ready nodes")
    apps = client.AppsV1Api(kube)
    await apps.create_namespaced_deployment(
        namespace, deployment("web", namespace, 2, node_selector={"molt.dev/instance-group": group})
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, 2), what="two ready replicas")
    await install_policy(kube, group, group, rules={"maxAge": "48h"}, budgets=[{"maxInFlight": 1}])
    molt = run_molt(*args, kubeconfig=kubeconfig, name="as-service-account")

    async def rotated() -> bool:
        ready = await ready_nodes(kube, group)
        return len(ready) == 2 and not set(ready) & set(old)

    try:
        await eventually(rotated, within=180, interval=1, what="both old nodes replaced")
    except AssertionError:
        raise AssertionError(molt.log()) from None
    await eventually(lambda: has_ready_replicas(kube, namespace, 2), what="two ready again")

    async def status_settled() -> dict[str, Any] | None:
        found = await client.CustomObjectsApi(kube).get_cluster_custom_object_status(
            GROUP, VERSION, "terminationpolicies", group
        )
        status = found.get("status") or {}
        return status if status.get("completed") == 2 and status.get("inFlight") == 0 else None

    await eventually(status_settled, within=20, what="the policy's status: 2 completed")
    assert molt.alive(), molt.log()
    lease = await client.CoordinationV1Api(kube).read_namespaced_lease(release.release, namespace)
    assert lease.spec.holder_identity, "the Lease in the release namespace has no holder"
    assert await node_events(kube, old[0]), "no Event recorded on a replaced node"
    log = molt.log()
    # A refusal shows as a 403 status or the API server's "is forbidden" message (a bare
    # "403" would also match the digits of a timestamp such as 43.540387).
    assert not re.search(r"(?<![\w.])403(?![\w.])", log), log
    assert "forbidden" not in log.lower(), log


# -- every verb is needed -----------------------------------------------------------------

ABSENT = "molt-rbac-probe"
"""The name the probes act on: nothing by that name exists, so an allowed call answers 404
(which Molt takes in its stride) and changes nothing, while a forbidden one answers 403."""


@dataclass(frozen=True)
class Grant:
    """One verb on one resource, as a role of the chart grants it."""

    kind: str
    role: str
    namespace: str | None
    group: str
    resource: str
    names: tuple[str, ...]
    verb: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)

    def __str__(self) -> str:
        where = f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.role}"
        group = self.group or "core"
        names = f" {list(self.names)}" if self.names else ""
        return f"{self.verb} {group}/{self.resource}{names} ({where})"


def _rule(grant: Grant) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "apiGroups": [grant.group],
        "resources": [grant.resource],
        "verbs": [grant.verb],
    }
    if grant.names:
        rule["resourceNames"] = list(grant.names)
    return rule


def _grants(role: dict[str, Any]) -> list[Grant]:
    meta = role["metadata"]
    return [
        Grant(
            role["kind"],
            meta["name"],
            meta.get("namespace"),
            group,
            resource,
            tuple(rule.get("resourceNames") or ()),
            verb,
        )
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


@dataclass
class Probes:
    """Molt's own objects on a client that holds only the ServiceAccount's token."""

    api: client.ApiClient
    namespace: str
    lease: str
    admin: client.ApiClient
    grant: Grant | None = None
    """The grant being probed: a namespaced call goes where that grant applies."""

    @property
    def granted_namespace(self) -> str:
        return (self.grant.namespace if self.grant else None) or self.namespace

    async def read_config_map(self) -> object:
        if self.granted_namespace == "kube-system":
            return await KwokProvider(self.api)._faults()
        if self.grant is not None and CLAIMS_CONFIGMAP in self.grant.names:
            return await self._claims().load()
        return await read_config_map_key(self.writes, self.granted_namespace, ABSENT, "template")

    def _claims(self) -> ClaimStore:
        return ClaimStore(client.CoreV1Api(self.api), self.granted_namespace, lambda: None)

    async def _drop_claims(self) -> None:
        with contextlib.suppress(ApiException):
            await client.CoreV1Api(self.admin).delete_namespaced_config_map(
                CLAIMS_CONFIGMAP, self.granted_namespace
            )

    async def create_claims(self) -> None:
        """The baremetal provider's first claim creates its ConfigMap; gone again after."""
        await self._drop_claims()
        try:
            await self._claims().update(_probe_claim)
        finally:
            await self._drop_claims()

    async def update_claims(self) -> None:
        """A later claim replaces the ConfigMap (made here by the admin first)."""
        await self._drop_claims()
        await client.CoreV1Api(self.admin).create_namespaced_config_map(
            self.granted_namespace,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=CLAIMS_CONFIGMAP), data={}),
        )
        try:
            await self._claims().update(_probe_claim)
        finally:
            await self._drop_claims()

    async def read_secret(self) -> object:
        names = self.grant.names if self.grant else ()
        return await read_secret_key(
            self.writes, self.granted_namespace, names[0] if names else ABSENT, "token"
        )

    async def create_probe_pod(self) -> None:
        """A probe pod as a probePod Watchdog creates it; then deleted again (with the
        ClusterRole's pod delete), so the next create is a create too."""
        check = ProbePodCheck(namespace=self.granted_namespace)
        await self.writes.create_object(probe_pod_body(ABSENT, check, ABSENT))
        await client.CoreV1Api(self.admin).delete_namespaced_pod(
            ABSENT, self.granted_namespace, grace_period_seconds=0
        )

    async def create_job(self) -> None:
        """A suspended Job (no pod is ever made), as the job action creates it; then
        gone again, so the next create is a create too."""
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": ABSENT, "namespace": self.granted_namespace},
            "spec": {
                "suspend": True,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "probe", "image": "busybox"}],
                    }
                },
            },
        }
        if not await self.writes.create_object(body):
            raise RuntimeError("the probe Job already existed")
        await client.BatchV1Api(self.admin).delete_namespaced_job(
            ABSENT, self.granted_namespace, propagation_policy="Background"
        )

    async def watch_job(self) -> None:
        """One watch of a Job as the job action opens it; it sees no change and ends."""
        ref = ObjectRef("batch/v1", "Job", ABSENT, self.granted_namespace)
        async with contextlib.aclosing(self.writes.watch_object(ref, "", timeout_seconds=1)) as w:
            async for _ in w:
                return

    @property
    def raw(self) -> RawApi:
        return RawApi(self.api)

    @property
    def writes(self) -> KubeWrites:
        return KubeWrites(self.raw, check_fence=lambda: None)

    def absent_pod(self) -> PodView:
        return PodView(self.namespace, ABSENT, "00000000-0000-0000-0000-000000000000", ABSENT)

    async def watch_once(self, path: str, query: list[tuple[str, str]] | None = None) -> None:
        """One watch as the reflectors open it; the first event (or a second) is enough."""
        async for _ in self.raw.watch(path, [*(query or []), ("allowWatchBookmarks", "true")], 1):
            return

    async def evict(self) -> None:
        result = await self.writes.evict(self.absent_pod())
        if result.outcome is not EvictionOutcome.GONE:
            raise RuntimeError(f"eviction {result.outcome.name}: {result.message}")

    def elector(self) -> LeaderElector:
        return LeaderElector(
            self.api, name=self.lease, namespace=self.namespace, identity="rbac-probe"
        )

    async def lease_absent(self) -> None:
        try:
            await client.CoordinationV1Api(self.admin).delete_namespaced_lease(
                self.lease, self.namespace
            )
        except client.ApiException as error:
            if error.status != 404:
                raise

    async def campaign(self) -> None:
        """One acquire-or-renew attempt of Molt's elector; it must end up holding."""
        outcome = await self.elector()._attempt(budget=5)
        if outcome.value != "holding":
            raise RuntimeError(f"leader election attempt: {outcome.value}")

    async def create_lease(self) -> None:
        await self.lease_absent()
        await self.campaign()

    async def renew_lease(self) -> None:
        # The lease is ours (the attempt before this one took it): this renews it.
        await self.campaign()


Probe = Callable[[Probes], Awaitable[object]]

PROBES: dict[tuple[str, str, str], Probe] = {
    ("", "nodes", "list"): lambda p: p.raw.list_all(NODES),
    ("", "nodes", "watch"): lambda p: p.watch_once(NODES),
    ("", "nodes", "get"): lambda p: p.writes.register_node(
        ABSENT, labels={}, annotations={}, taints=()
    ),
    ("", "nodes", "patch"): lambda p: p.writes.patch_node(ABSENT, labels={"probe": "x"}),
    ("", "nodes", "delete"): lambda p: p.writes.delete_node(ABSENT),
    # The kwok provider's launch, as a dry run so no Node appears.
    ("", "nodes", "create"): lambda p: client.CoreV1Api(p.api).create_node(
        kwok_node(ABSENT), dry_run="All"
    ),
    # The kwok provider's reboot reports the rebooting node's Ready condition.
    ("", "nodes/status", "patch"): lambda p: KwokProvider(p.api)._report_rebooting(
        ABSENT, datetime.now(UTC)
    ),
    ("", "pods", "list"): lambda p: p.writes.list_pods_now(ABSENT),
    # The controller's shared pod cache: every bound pod, one watch.
    ("", "pods", "watch"): lambda p: p.watch_once(PODS, [("fieldSelector", BOUND)]),
    ("", "pods", "delete"): lambda p: p.writes.delete_pod(p.absent_pod()),
    ("", "pods/eviction", "create"): lambda p: p.evict(),
    ("policy", "poddisruptionbudgets", "list"): lambda p: p.writes.list_pdbs_now(),
    ("policy", "poddisruptionbudgets", "get"): lambda p: p.writes.read_pdb("default", ABSENT),
    (GROUP, "instancegroups", "list"): lambda p: p.raw.list_all(GROUPS),
    (GROUP, "instancegroups", "watch"): lambda p: p.watch_once(GROUPS),
    (GROUP, "terminationpolicies", "list"): lambda p: p.raw.list_all(POLICIES),
    (GROUP, "terminationpolicies", "watch"): lambda p: p.watch_once(POLICIES),
    (GROUP, "instancegroups/status", "patch"): lambda p: p.writes.patch_status(
        InstanceGroup, ABSENT, {"currentRevision": "probe"}
    ),
    (GROUP, "terminationpolicies/status", "patch"): lambda p: p.writes.patch_status(
        TerminationPolicy, ABSENT, {"selected": 0}
    ),
    (GROUP, "reapers", "list"): lambda p: p.raw.list_all(REAPERS),
    (GROUP, "reapers", "watch"): lambda p: p.watch_once(REAPERS),
    (GROUP, "reapers/status", "patch"): lambda p: p.writes.patch_status(
        Reaper, ABSENT, {"reaped": {"stuckPods": 0}}
    ),
    (GROUP, "watchdogs", "list"): lambda p: p.raw.list_all(WATCHDOGS),
    (GROUP, "watchdogs", "watch"): lambda p: p.watch_once(WATCHDOGS),
    (GROUP, "watchdogs/status", "patch"): lambda p: p.writes.patch_status(
        Watchdog, ABSENT, {"state": "Healthy"}
    ),
    # A probePod Watchdog's probe pod, in a namespace the chart grants it.
    ("", "pods", "create"): lambda p: p.create_probe_pod(),
    # A Reaper's namespaceSelector (controllers/reaper: namespace_labels_now).
    ("", "namespaces", "list"): lambda p: p.writes.namespace_labels_now(),
    ("coordination.k8s.io", "leases", "create"): lambda p: p.create_lease(),
    ("coordination.k8s.io", "leases", "get"): lambda p: p.campaign(),
    ("coordination.k8s.io", "leases", "update"): lambda p: p.renew_lease(),
    # Molt swallows a failed Event (it logs event.not_recorded); the log says why.
    ("", "events", "create"): lambda p: p.writes.record_resource_event(
        InstanceGroup, ABSENT, "RbacProbe", "a probe of the chart's RBAC"
    ),
    # In kube-system, the kwok provider's faults; in a job namespace, a Job template.
    ("", "configmaps", "get"): lambda p: p.read_config_map(),
    ("batch", "jobs", "create"): lambda p: p.create_job(),
    ("batch", "jobs", "get"): lambda p: read_job(p.writes, p.granted_namespace, ABSENT),
    ("batch", "jobs", "watch"): lambda p: p.watch_job(),
    ("batch", "jobs", "delete"): lambda p: p.writes.delete_object(
        ObjectRef("batch/v1", "Job", ABSENT, p.granted_namespace)
    ),
    ("", "secrets", "get"): lambda p: p.read_secret(),
    # The baremetal provider's host claims, in the release namespace.
    ("", "configmaps", "create"): lambda p: p.create_claims(),
    ("", "configmaps", "update"): lambda p: p.update_claims(),
}
"""For every verb the chart grants, the call Molt makes with it, through Molt's own code
wherever it has one."""


def _probe_claim(claims: dict[str, Claim]) -> None:
    claims[ABSENT] = Claim(
        host=ABSENT,
        group=ABSENT,
        revision="probe",
        zone="rack-1",
        capacity_type="on-demand",
        state="launching",
        address="http://127.0.0.1:1",
        system_id="1",
        secret=ABSENT,
        claimed_at=datetime.now(UTC),
    )


async def _outcome(probes: Probes, probe: Probe) -> str | None:
    """None when Molt's call went through cleanly; else what it raised or warned about."""
    raised: list[str] = []
    with capture_logs() as logs:
        try:
            await probe(probes)
        except Exception as error:
            raised.append(f"{type(error).__name__}: {error}")
    complaints = [str(e) for e in logs if e.get("log_level") in ("warning", "error")]
    return "; ".join(raised + complaints) or None


def _forbidden(text: str | None) -> bool:
    return text is not None and ("403" in text or "forbidden" in text.lower())


async def _set_rules(admin: client.ApiClient, role: dict[str, Any], rules: list[Any]) -> None:
    meta = role["metadata"]
    base = "/apis/rbac.authorization.k8s.io/v1"
    if role["kind"] == "ClusterRole":
        path = f"{base}/clusterroles/{meta['name']}"
    else:
        path = f"{base}/namespaces/{meta['namespace']}/roles/{meta['name']}"
    await RawApi(admin).merge_patch(path, {"rules": rules})


async def _allowed(admin: client.ApiClient, user: str, namespace: str, grant: Grant) -> bool:
    """What the API server's authorizer now says about the grant, for the account."""
    resource, _, subresource = grant.resource.partition("/")
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}"],
            resource_attributes=client.V1ResourceAttributes(
                group=grant.group,
                resource=resource,
                subresource=subresource or None,
                verb=grant.verb,
                namespace=grant.namespace,
                name=grant.names[0] if grant.names else None,
            ),
        )
    )
    answer = await client.AuthorizationV1Api(admin).create_subject_access_review(review)
    return bool(answer.status.allowed)


@pytest.fixture
async def probe_events(kube: client.ApiClient) -> AsyncIterator[None]:
    """The Events the probes record on a made-up InstanceGroup go afterwards."""
    yield
    await client.CoreV1Api(kube).delete_collection_namespaced_event(
        "default", field_selector=f"involvedObject.name={ABSENT}"
    )


ALL_PROVIDERS = ["kwok", "aws", "baremetal"]
BAREMETAL_VALUES = {"credentialsSecrets": ["bmc-creds"]}


JOB_NAMESPACE = "default"
"""Job actions run outside the release namespace: there the baremetal Role grants its own
ConfigMap, and one verb granted twice on one object could not be shown necessary."""


def action_values(namespace: str) -> dict[str, Any]:
    """Job and vault actions, so their roles are rendered."""
    return {
        "jobNamespaces": [JOB_NAMESPACE],
        "secrets": [{"namespace": namespace, "name": "tok"}],
    }


@pytest.mark.parametrize("providers", [["kwok"], ALL_PROVIDERS], ids=["kwok", "kwok+aws+baremetal"])
async def test_every_verb_the_chart_grants_is_one_molt_needs(
    providers: list[str],
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    install: Callable[..., Install],
    probe_events: None,
    tmp_path: Path,
) -> None:
    release = install(
        providers=providers, actions=action_values(namespace), baremetal=BAREMETAL_VALUES
    )
    roles = [doc for doc in documents(release.text) if doc["kind"] in RBAC_KINDS]
    grants = [grant for role in roles for grant in _grants(role)]
    granted = {grant.key for grant in grants}
    assert not granted - set(PROBES), f"granted without a probe: {granted - set(PROBES)}"
    if providers == ALL_PROVIDERS:
        assert granted == set(PROBES), f"probed, never granted: {set(PROBES) - granted}"
    await wait_for_service_account(kube, namespace, release.service_account)
    kubeconfig = await token_kubeconfig(
        kube, sandbox.kubeconfig, namespace, release.service_account, tmp_path / "sa.kubeconfig"
    )
    api = await api_client(kubeconfig)
    probes = Probes(api, namespace, release.release, kube)
    denials: dict[str, str] = {}
    try:
        for role in roles:
            full = copy.deepcopy(role["rules"])
            for grant in _grants(role):
                probe = PROBES[grant.key]
                probes.grant = grant
                passed = await _outcome(probes, probe)
                assert passed is None, (
                    f"{grant}: Molt's call fails with the chart's roles: {passed}"
                )
                await _set_rules(kube, role, [_rule(g) for g in _grants(role) if g != grant])
                try:

                    async def revoked(grant: Grant = grant) -> bool:
                        return not await _allowed(kube, release.user, namespace, grant)

                    await eventually(revoked, within=10, interval=0.05, what=f"{grant} revoked")
                    denied = await _outcome(probes, probe)
                finally:
                    await _set_rules(kube, role, full)

                async def restored(grant: Grant = grant) -> bool:
                    return await _allowed(kube, release.user, namespace, grant)

                await eventually(restored, within=10, interval=0.05, what=f"{grant} restored")
                assert _forbidden(denied), f"without {grant}, Molt's call still went: {denied}"
                assert denied is not None
                denials[str(grant)] = denied
    finally:
        await api.close()
    assert len(denials) == len(grants)
    for grant_text, denied_text in denials.items():  # shown with pytest -rP
        print(f"without {grant_text}: {denied_text[:160]}")
