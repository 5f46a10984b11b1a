"""`molt why NODE` against the real control plane: the right blocker, in words and in the
JSON fields, with a sane ETA, for each thing that holds a node — and a PDB that can never
allow a drain caught before the node is cordoned."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.policy.age import parse_rfc3339
from tests.conftest import RunningSandbox
from tests.support.builders import deployment, instance_group, kwok_node, never_scheduled, pdb
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    GROUP_LABEL,
    KWOK_REVISION,
    KWOK_TEMPLATE,
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    node_annotation,
    node_events,
)
from tests.support.waiting import eventually


async def molt_json(sandbox: RunningSandbox, *args: str) -> Any:
    """Run a read-only molt command with ``-o json``; its parsed output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "molt.cli.main",
        *args,
        "-o",
        "json",
        f"--kubeconfig={sandbox.kubeconfig}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def why(sandbox: RunningSandbox, node: str) -> dict[str, Any]:
    found: dict[str, Any] = await molt_json(sandbox, "why", node)
    return found


def _eta(answer: dict[str, Any]) -> datetime:
    assert answer["eta"], answer
    return parse_rfc3339(answer["eta"])


async def test_a_young_node_is_too_young_until_its_start_age(
    sandbox: RunningSandbox, kube: client.ApiClient, empty_cluster: None
) -> None:
    group = f"young-{uuid.uuid4().hex[:5]}"
    [young] = await install_old_fleet(kube, group, nodes=1, age=timedelta(hours=10))
    await install_policy(kube, group, group, rules={"maxAge": "48h"}, drain={"timeout": "2h"})
    launched = parse_rfc3339(await node_annotation(kube, young, "molt.dev/launched-at") or "")

    answer = await why(sandbox, young)

    assert answer["state"] == "running"
    assert answer["selected"] is False
    assert answer["blocker"] == "TooYoung"
    assert answer["policy"] == group
    assert "too young until" in answer["message"]
    # 48 h less the 2 h drain lead (no jitter): selected 46 h after launch.
    assert abs((_eta(answer) - (launched + timedelta(hours=46))).total_seconds()) < 2


async def test_a_closed_window_holds_a_selected_node_until_it_opens(
    sandbox: RunningSandbox, kube: client.ApiClient, empty_cluster: None
) -> None:
    group = f"win-{uuid.uuid4().hex[:5]}"
    # Aged but not past its deadline (48 h less a 2 h lead starts it at 46 h), so the
    # window applies to it.
    [aged] = await install_old_fleet(kube, group, nodes=1, age=timedelta(hours=47))
    now = datetime.now(UTC)
    opens_hour = (now.hour + 3) % 24
    await install_policy(
        kube,
        group,
        group,
        rules={"maxAge": "48h"},
        drain={"timeout": "2h"},
        budgets=[{"maxInFlight": 1, "schedule": f"0 {opens_hour} * * *", "duration": "1h"}],
    )

    answer = await why(sandbox, aged)

    assert answer["blocker"] == "WindowClosed", answer
    assert answer["state"] == "waiting"
    assert answer["rule"] == "MaxAge"
    assert "maintenance window is closed" in answer["message"]
    opens = _eta(answer)
    assert opens.hour == opens_hour
    assert opens.minute == 0
    assert timedelta(hours=2) < opens - now <= timedelta(hours=3)
    assert answer["details"]["schedule"] == f"0 {opens_hour} * * *"


async def test_a_pdb_that_can_never_allow_a_drain_is_reported_before_cordoning(
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    group = f"dead-{uuid.uuid4().hex[:5]}"
    [locked] = await install_old_fleet(kube, group, nodes=1, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, 1), what="a Ready node")
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace, deployment("db", namespace, 1, node_selector={"kubernetes.io/hostname": locked})
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("db", namespace, "db", max_unavailable=0)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, 1, "db"), what="the db pod")
    await install_policy(kube, group, group, rules={"maxAge": "48h"}, budgets=[{"maxInFlight": 1}])

    answer = await why(sandbox, locked)
    assert answer["blocker"] == "PdbDeadlock", answer
    assert answer["details"]["pdbs"] == [f"{namespace}/db"]
    assert "maxUnavailable is 0" in answer["message"]
    assert answer["eta"] is None
    [planned] = await molt_json(sandbox, "plan")
    assert planned["action"] == "wait"
    assert planned["blockedBy"].startswith("PDB deadlock")

    run_molt()

    async def counted() -> dict[str, Any] | None:
        found = await client.CustomObjectsApi(kube).get_cluster_custom_object_status(
            GROUP, VERSION, "terminationpolicies", group
        )
        status: dict[str, Any] = found.get("status") or {}
        return status if status.get("deadlocked") == 1 else None

    status = await eventually(counted, within=30, what="the policy to count the deadlock")
    assert status["inFlight"] == 0
    events = [m for r, m in await node_events(kube, locked) if r == "PDBDeadlock"]
    assert len(events) == 1
    assert f"{namespace}/db" in events[0]
    node = await client.CoreV1Api(kube).read_node(locked)
    assert not node.spec.unschedulable, "a node no drain can empty was cordoned"
    assert "molt.dev/state" not in (node.metadata.labels or {})


async def test_why_names_the_pdb_a_full_budget_a_missing_replacement_and_a_running_action(
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    suffix = uuid.uuid4().hex[:5]
    # Group 1: the oldest node rotates (a measured rotation), the next one's drain is held
    # by a PDB at 0 allowed (a pod of it is Pending), the youngest waits on the budget.
    fleet = f"why-{suffix}"
    first, held, queued = await install_old_fleet(
        kube,
        fleet,
        nodes=3,
        age=[timedelta(hours=62), timedelta(hours=61), timedelta(hours=47)],
    )
    # Group 2: one aged node and no room for a replacement (maxSize = replicas).
    tight = f"tight-{suffix}"
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            tight,
            minSize=1,
            maxSize=1,
            replicas=1,
            zones=["zone-a"],
            template=KWOK_TEMPLATE,
            health={"readyTimeout": "30m"},
        ),
    )
    waiting = f"{tight}-old-0"
    await client.CoreV1Api(kube).create_node(
        kwok_node(
            waiting,
            labels={
                GROUP_LABEL: tight,
                "molt.dev/revision": KWOK_REVISION,
                "topology.kubernetes.io/zone": "zone-a",
            },
            launched_at=datetime.now(UTC) - timedelta(hours=47),
        )
    )
    # Group 3: a preDrain action that takes its time.
    slow = f"slow-{suffix}"
    hook_calls: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        hook_calls.append((await request.json())["node"])
        await asyncio.sleep(120)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        [acting] = await install_old_fleet(
            kube,
            slow,
            nodes=1,
            age=timedelta(hours=60),
            lifecycle={"preDrain": [{"name": "notify", "timeout": "5m", "http": {"url": url}}]},
        )
        await eventually(lambda: has_ready_nodes(kube, fleet, 3), what="group 1 Ready")
        apps = client.AppsV1Api(kube)
        await apps.create_namespaced_deployment(
            namespace,
            deployment("db", namespace, 2, node_selector={"kubernetes.io/hostname": held}),
        )
        # A third pod of the PDB's selection that can never schedule: the PDB expects 3,
        # has 2 healthy and needs 2, so it allows 0 now, without being a deadlock.
        await apps.create_namespaced_deployment(
            namespace, never_scheduled("db-extra", namespace, "db")
        )
        await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
            namespace, pdb("db", namespace, "db", min_available=2)
        )
        await eventually(lambda: has_ready_replicas(kube, namespace, 2, "db"), what="db pods")
        await install_policy(
            kube,
            fleet,
            fleet,
            rules={"maxAge": "48h"},
            drain={"timeout": "2h"},
            budgets=[{"maxInFlight": 1}],
        )
        await install_policy(kube, tight, tight, rules={"maxAge": "48h"}, drain={"timeout": "2h"})
        await install_policy(kube, slow, slow, rules={"maxAge": "48h"})
        run_molt()

        async def draining(name: str) -> bool:
            found = await client.CoreV1Api(kube).read_node(name)
            return (found.metadata.labels or {}).get("molt.dev/state") == "draining"

        await eventually(lambda: draining(held), within=120, what="the held node draining")
        await eventually(lambda: _called(hook_calls, acting), within=60, what="the action")

        # The PDB at 0 allowed, named with since when.
        answer = await why(sandbox, held)
        assert answer["blocker"] == "PdbAllowsZero", answer
        assert answer["details"]["pdbs"] == [f"{namespace}/db"]
        assert f"PodDisruptionBudget {namespace}/db allows 0 disruptions since" in answer["message"]
        assert answer["details"]["pdbSince"]
        assert answer["eta"] is None  # Molt never forces a PDB, so there is no date to give

        # The full budget, who uses it, and an ETA from the rotation just measured.
        asked = datetime.now(UTC).replace(microsecond=0)
        answer = await why(sandbox, queued)
        assert answer["blocker"] == "BudgetFull", answer
        assert answer["details"]["nodesInFlight"] == [held]
        assert answer["details"]["ahead"] == 0
        assert "median rotation" in answer["etaBasis"]
        median = answer["details"]["medianRotationSeconds"]
        assert 0 < median < 300, answer  # the first node's rotation, seconds in kwok
        # Nothing ahead, one at a time: one median rotation from when it was asked.
        ahead_by = (_eta(answer) - asked).total_seconds()
        assert median - 1 <= ahead_by <= median + 30, answer

        # No room in the group for a replacement.
        answer = await why(sandbox, waiting)
        assert answer["blocker"] == "WaitingForCapacity", answer
        assert answer["details"]["group"] == tight
        assert f"waiting for a Ready replacement in group {tight}" in answer["message"]
        # At the latest: its deadline (launch + 48 h, an hour from now) drains it anyway.
        latest = _eta(answer)
        assert timedelta(minutes=55) < latest - asked < timedelta(minutes=65), answer

        # A running lifecycle action, with its attempt.
        answer = await why(sandbox, acting)
        assert answer["blocker"] == "ActionRunning", answer
        assert answer["details"]["action"] == "preDrain/ig/notify"
        assert answer["details"]["attempt"] == 1
        assert "attempt 1" in answer["message"]
        assert first  # rotated first: the measured rotation
    finally:
        await runner.cleanup()


async def _called(calls: list[str], node: str) -> bool:
    return node in calls
