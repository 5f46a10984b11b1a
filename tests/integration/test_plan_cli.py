"""`molt plan` against the real control plane: the expected decisions, in order, with
reasons; bad metadata reported, not acted on; and nothing in the cluster changes."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.sandbox.sample_fleet import CURRENT_REVISION, PREVIOUS_REVISION, install_sample_fleet
from tests.conftest import RunningSandbox
from tests.support.builders import kwok_node
from tests.support.waiting import eventually


async def _all_ready(kube: client.ApiClient) -> bool:
    nodes = await client.CoreV1Api(kube).list_node()
    return all(
        any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
        for n in nodes.items
    )


async def _settled_versions(kube: client.ApiClient) -> dict[str, str]:
    """Resource versions, once they have stayed the same for two seconds."""
    first = await _resource_versions(kube)
    await asyncio.sleep(2)
    return first if await _resource_versions(kube) == first else {}


async def _resource_versions(kube: client.ApiClient) -> dict[str, str]:
    nodes = await client.CoreV1Api(kube).list_node()
    return {n.metadata.name: n.metadata.resource_version for n in nodes.items}


async def test_plan_lists_the_sample_fleets_decisions_and_changes_nothing(
    sandbox: RunningSandbox, kube: client.ApiClient
) -> None:
    now = datetime.now(UTC)
    await install_sample_fleet(kube, now)
    garbled = kwok_node(
        "workers-garbled",
        labels={"molt.dev/instance-group": "workers", "topology.kubernetes.io/zone": "zone-a"},
        annotations={"molt.dev/launched-at": "last tuesday"},
    )
    await client.CoreV1Api(kube).create_node(garbled)
    # The group's actions come before the policy's at each hook point.
    custom = client.CustomObjectsApi(kube)
    hook = {"name": "notify", "http": {"url": "http://127.0.0.1:9/drain"}}
    step_down = {
        "name": "step-down",
        "vault": {
            "address": "https://{{ .Node.InternalIP }}:8200",
            "tokenSecret": {"namespace": "vault", "name": "molt", "key": "token"},
        },
    }
    merge = {"_content_type": "application/merge-patch+json"}
    await custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        "workers",
        {"spec": {"lifecycle": {"preTerminate": [step_down]}}},
        **merge,
    )
    await custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        "terminationpolicies",
        "rotate-48h",
        {"spec": {"lifecycle": {"preDrain": [hook], "preTerminate": [{**hook, "name": "bye"}]}}},
        **merge,
    )
    # Let kwok (Ready) and the controller-manager (TTL annotation, taints) finish with the
    # new nodes, so that from here on only Molt could change them.
    await eventually(lambda: _all_ready(kube), what="kwok to mark every node Ready")
    before = await eventually(lambda: _settled_versions(kube), what="node writes to settle")

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "molt.cli.main",
        "plan",
        "-o",
        "json",
        "--kubeconfig",
        str(sandbox.kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    stdout, stderr = out.decode(), err.decode()

    assert process.returncode == 0, stderr
    rows = json.loads(stdout)
    assert all({"node", "policy", "reason", "action"} <= set(row) for row in rows)
    assert [(r["node"], r["action"]) for r in rows] == [
        ("workers-zone-a-0", "terminate"),
        ("workers-zone-b-3", "terminate"),
        ("workers-zone-b-5", "wait"),
        ("workers-zone-c-6", "wait"),
        ("workers-zone-a-1", "wait"),
        ("workers-zone-b-4", "wait"),
    ]
    assert rows[0]["reason"] == "max-age: 61h > 48h (past its deadline)"
    assert rows[0]["policy"] == "rotate-48h"
    assert rows[0]["lifecycle"] == {
        "preDrain": ["http notify"],
        "preTerminate": ["vault step-down", "http bye"],
    }
    assert rows[2]["reason"].startswith("taint: example.com/volume-attach-stuck:NoExecute")
    assert rows[3]["reason"] == f"drift: revision {PREVIOUS_REVISION} != current {CURRENT_REVISION}"
    assert "budget full: 2/2 in flight in cluster" in rows[2]["blockedBy"]
    assert "workers-garbled" not in {r["node"] for r in rows}
    assert "node workers-garbled" in stderr
    assert "not an RFC 3339 time" in stderr
    assert await _resource_versions(kube) == before
    # The plan is computed at a later instant than the fleet was made: ages only grow.
    assert rows[0]["ageSeconds"] >= int(timedelta(hours=61).total_seconds())
