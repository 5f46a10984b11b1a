"""A kubelet stand-in for AWS tests: moto's instances join the cluster as kwok Nodes.

moto launches no machines, so nothing would ever register a Node for its instances. The
bridge polls moto (through boto3) for InService instances of the Auto Scaling groups
tagged with one InstanceGroup and creates a kwok Node for each, once, as a kubelet
started by a stock bootstrap registers itself: named after the instance id, with
``spec.providerID: aws:///<zone>/<instance-id>`` and the kubelet's own labels (hostname,
os, arch), and nothing of Molt's. Molt's registration gives the Node its group, revision,
zone and capacity-type labels, its template's labels and taints and its launch time. The
bridge only creates Nodes; deleting the Nodes of instances that are gone is the
controller's job. Instances of revisions listed
in ``skip_revisions`` never join, as when a bad template boots machines that never
become nodes.

    async with AwsNodeBridge(kube, "workers") as bridge:
        ...  # Nodes appear for the group's instances
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api.labels import GROUP_LABEL, REVISION_LABEL
from molt.cloud.kwok_nodes import kwok_node


class AwsNodeBridge:
    """Creates a kwok Node for every InService instance of one InstanceGroup's cells."""

    def __init__(
        self,
        api: client.ApiClient,
        group: str,
        *,
        interval: float = 0.5,
        skip_revisions: set[str] | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.group = group
        self.interval = interval
        self.skip_revisions: set[str] = set(skip_revisions or ())
        """Revisions whose instances never join (add to it while the bridge runs)."""
        session = session or boto3.session.Session()
        config = Config(retries={"mode": "standard", "max_attempts": 3})
        self.autoscaling: Any = session.client("autoscaling", config=config)
        self.ec2: Any = session.client("ec2", config=config)
        self.joined: dict[str, str] = {}
        """Node name -> providerID of every Node the bridge created."""
        self.errors: list[str] = []
        """Why a poll failed (the bridge keeps polling)."""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AwsNodeBridge:
        self._task = asyncio.create_task(self._run(), name=f"aws-bridge-{self.group}")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep bridging; the test can read the errors
                self.errors.append(repr(error))
            await asyncio.sleep(self.interval)

    async def poll(self) -> list[str]:
        """One pass: create the Nodes of instances that have none yet; returns their names."""
        instances = await asyncio.to_thread(self._in_service)
        created = []
        for instance in instances:
            name = str(instance["InstanceId"])
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags") or []}
            if name in self.joined or tags.get(REVISION_LABEL) in self.skip_revisions:
                continue
            zone = str(instance["Placement"]["AvailabilityZone"])
            # Only what a kubelet knows of itself: the tags are for Molt to read, not us.
            manifest = kwok_node(name)
            manifest["spec"]["providerID"] = f"aws:///{zone}/{name}"
            try:
                await self.core.create_node(manifest)  # type: ignore[arg-type]
            except ApiException as error:
                if error.status != 409:
                    raise
            self.joined[name] = manifest["spec"]["providerID"]
            created.append(name)
        return created

    def _in_service(self) -> list[dict[str, Any]]:
        """EC2's view of the group's InService instances."""
        pages = self.autoscaling.get_paginator("describe_auto_scaling_groups").paginate(
            Filters=[{"Name": f"tag:{GROUP_LABEL}", "Values": [self.group]}]
        )
        ids = [
            member["InstanceId"]
            for page in pages
            for asg in page.get("AutoScalingGroups") or []
            for member in asg.get("Instances") or []
            if member.get("LifecycleState") == "InService"
        ]
        if not ids:
            return []
        reservations = self.ec2.describe_instances(
            Filters=[{"Name": "instance-id", "Values": ids}]
        ).get("Reservations")
        return [
            instance
            for reservation in reservations or []
            for instance in reservation.get("Instances") or []
            if (instance.get("State") or {}).get("Name") == "running"
        ]
