"""The ghost-node reaper on AWS (moto): a NotReady Node whose EC2 instance was terminated
behind Molt's back is deleted; one whose instance still runs is kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api import GROUP, VERSION
from molt.cloud.aws import provider_id
from tests.support.builders import kwok_node
from tests.support.controller import MoltProcess
from tests.support.waiting import eventually

REGION = "eu-west-1"
ZONE = "eu-west-1a"


async def _exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        await core.read_node(name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def test_a_node_whose_instance_was_terminated_is_reaped_and_a_running_ones_kept(
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    kube: client.ApiClient,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=moto_endpoint)
    launched = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=2,
        MaxCount=2,
        InstanceType="m5.large",
        Placement={"AvailabilityZone": ZONE},
    )["Instances"]
    ids = [i["InstanceId"] for i in launched]
    core = client.CoreV1Api(kube)
    suffix = uuid.uuid4().hex[:5]
    running, ghost = f"running-{suffix}", f"ghost-{suffix}"
    for name, instance in ((running, ids[0]), (ghost, ids[1])):
        # No kwok runs them (no kwok annotation): they never report Ready, as a node
        # whose kubelet has stopped.
        manifest: dict[str, Any] = kwok_node(name)
        del manifest["metadata"]["annotations"]["kwok.x-k8s.io/node"]
        manifest["spec"]["providerID"] = provider_id(ZONE, instance)
        await core.create_node(manifest)
    ec2.terminate_instances(InstanceIds=[ids[1]])  # behind Molt's back

    custom = client.CustomObjectsApi(kube)
    reaper = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Reaper",
        "metadata": {"name": f"aws-{suffix}"},
        "spec": {"ghostNodes": {"after": "3s"}, "interval": "1s"},
    }
    await custom.create_cluster_custom_object(GROUP, VERSION, "reapers", reaper)
    try:
        molt = run_molt("--provider", "aws")

        async def ghost_gone() -> bool:
            return not await _exists(core, ghost)

        await eventually(ghost_gone, within=60, interval=0.5, what="the ghost node reaped")
        await asyncio.sleep(4)  # more passes: the node whose instance runs stays
        assert await _exists(core, running), "a node whose instance runs was deleted"
        found = await custom.get_cluster_custom_object(GROUP, VERSION, "reapers", f"aws-{suffix}")
        assert found["status"]["reaped"]["ghostNodes"] == 1, found["status"]
        assert molt.alive(), molt.log()
    finally:
        await custom.delete_cluster_custom_object(GROUP, VERSION, "reapers", f"aws-{suffix}")
        ec2.terminate_instances(InstanceIds=[ids[0]])
