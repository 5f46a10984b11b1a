"""Molt installed from its Helm chart into the sandbox, and acting as its ServiceAccount.

``Install`` renders the chart for one release in a test namespace, applies it with
kubectl (server-side) and deletes it again, cluster-scoped and other-namespace objects
included. ``token_kubeconfig`` asks the TokenRequest API for a token of a ServiceAccount
and writes a kubeconfig holding only that token, so a client (or ``molt run``) has exactly
the permissions the chart grants.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config

from molt.sandbox.chart import documents, template
from tests.conftest import RunningSandbox

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "molt"


@dataclass
class Install:
    """One release of the chart, rendered and applied; ``delete`` removes all of it."""

    sandbox: RunningSandbox
    helm: Path
    release: str
    namespace: str
    values: dict[str, Any] = field(default_factory=dict)
    text: str = ""

    def render(self) -> list[dict[str, Any]]:
        self.text = template(
            self.helm, CHART, release=self.release, namespace=self.namespace, values=self.values
        )
        return documents(self.text)

    def apply(self) -> list[dict[str, Any]]:
        docs = self.render()
        result = self.sandbox.kubectl("apply", "--server-side", "-f", "-", stdin=self.text)
        assert result.returncode == 0, f"kubectl apply failed:\n{result.stdout}{result.stderr}"
        return docs

    def delete(self) -> None:
        if self.text:
            self.sandbox.kubectl(
                "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=self.text
            )

    @property
    def service_account(self) -> str:
        # The chart's full name: the release name, which holds "molt" in these tests.
        return self.release

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in documents(self.text) if doc["kind"] == kind]

    def container(self) -> dict[str, Any]:
        deployment = self.of_kind("Deployment")[0]
        container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
        return container


async def token_kubeconfig(
    kube: client.ApiClient,
    admin_kubeconfig: Path,
    namespace: str,
    account: str,
    path: Path,
    *,
    expiration_seconds: int = 3600,
) -> Path:
    """A kubeconfig for the sandbox whose only credential is a token of ``account``."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    )
    issued = await client.CoreV1Api(kube).create_namespaced_service_account_token(
        account, namespace, request
    )
    write_token_kubeconfig(admin_kubeconfig, account, issued.status.token, path)
    return path


def write_token_kubeconfig(admin_kubeconfig: Path, user: str, token: str, path: Path) -> None:
    """The admin kubeconfig's cluster (server and CA), with ``token`` as the only credential."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config_doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": cluster["name"], "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config_doc, sort_keys=False))
    path.chmod(0o600)


async def api_client(kubeconfig: Path) -> client.ApiClient:
    """An API client from a kubeconfig file."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


async def wait_for_service_account(kube: client.ApiClient, namespace: str, name: str) -> None:
    core = client.CoreV1Api(kube)
    for _ in range(100):
        accounts = await core.list_namespaced_service_account(namespace)
        if any(a.metadata.name == name for a in accounts.items):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"ServiceAccount {namespace}/{name} never appeared")
