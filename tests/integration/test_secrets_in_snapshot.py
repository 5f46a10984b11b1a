"""``molt snapshot`` captures a cluster whose resources reference Secrets (a BMC login, a
Vault token, a PagerDuty routing key) without ever printing a Secret's value: it names
what references them at most, and reads no Secret."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client
from typer.testing import CliRunner

from molt.api import GROUP, VERSION
from molt.cli.main import app
from tests.conftest import RunningSandbox
from tests.support.builders import instance_group, termination_policy

VALUES = {
    "password": "bmc-pa55word-s3cret",
    "token": "s.vault-token-s3cret",
    "routing": "pd-routing-key-s3cret",
}


@pytest.fixture
async def referencing_secrets(kube: client.ApiClient, namespace: str) -> AsyncIterator[None]:
    """A Secret with every credential, and a group, a policy and a watchdog naming it."""
    core = client.CoreV1Api(kube)
    data = {key: base64.b64encode(value.encode()).decode() for key, value in VALUES.items()}
    data["username"] = base64.b64encode(b"admin").decode()
    await core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), data=data)
    )
    custom = client.CustomObjectsApi(kube)
    group = instance_group(
        f"metal-{namespace}",
        provider="baremetal",
        zones=["rack-1"],
        minSize=0,
        maxSize=1,
        replicas=1,
        template={
            "instanceTypes": ["metal"],
            "image": "https://127.0.0.1:9/os.iso",
            "baremetal": {
                "credentialsSecret": "creds",
                "hosts": [
                    {
                        "name": "h1",
                        "zone": "rack-1",
                        "redfish": {"address": "https://127.0.0.1:9", "systemId": "1"},
                    }
                ],
            },
        },
    )
    ref = {"namespace": namespace, "name": "creds"}
    vault = {"address": "https://127.0.0.1:9", "tokenSecret": {**ref, "key": "token"}}
    policy = termination_policy(
        f"vault-{namespace}",
        nodeSelector={"matchLabels": {"molt.dev/instance-group": f"metal-{namespace}"}},
        lifecycle={"preTerminate": [{"name": "vault", "vault": vault}]},
    )
    watchdog = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Watchdog",
        "metadata": {"name": f"pd-{namespace}"},
        "spec": {
            "check": {"nodeCondition": {"type": "KernelDeadlock"}},
            "sinks": [{"pagerDuty": {"routingKey": {**ref, "key": "routing"}}}],
        },
    }
    made = [
        ("instancegroups", group),
        ("terminationpolicies", policy),
        ("watchdogs", watchdog),
    ]
    for plural, body in made:
        await custom.create_cluster_custom_object(GROUP, VERSION, plural, body)
    yield
    for plural, body in made:
        await custom.delete_cluster_custom_object(GROUP, VERSION, plural, body["metadata"]["name"])


async def test_a_snapshot_prints_no_secret_value(
    sandbox: RunningSandbox, referencing_secrets: None
) -> None:
    args = ["snapshot", f"--kubeconfig={sandbox.kubeconfig}"]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output[-2000:]
    assert "metal-" in result.stdout, result.stdout[:2000]  # the group was captured
    seen = result.output
    for value in VALUES.values():
        assert value not in seen
        assert base64.b64encode(value.encode()).decode() not in seen
