"""`molt status` against the real control plane: groups, the pipeline, and the next 24 h
of expiries counted into the right hours."""

from __future__ import annotations

import uuid
from datetime import timedelta

from kubernetes_asyncio import client

from tests.conftest import RunningSandbox
from tests.integration.test_why import molt_json
from tests.support.kube_fleet import install_old_fleet, install_policy


async def test_status_counts_expiries_by_hour_and_names_the_groups(
    sandbox: RunningSandbox, kube: client.ApiClient, empty_cluster: None
) -> None:
    group = f"st-{uuid.uuid4().hex[:5]}"
    # 48 h less a 2 h drain lead: selected at 46 h. Ages 47 h (in flight), 40 h 30 m (due
    # in 5 h 30 m), 30 h 30 m (due in 15 h 30 m), 10 h (due in 36 h: past the window).
    ages = [timedelta(hours=h) for h in (47, 40.5, 30.5, 10)]
    names = await install_old_fleet(kube, group, nodes=4, age=ages)
    await install_policy(kube, group, group, rules={"maxAge": "48h"}, drain={"timeout": "2h"})
    await client.CoreV1Api(kube).patch_node(
        names[0],
        {
            "metadata": {
                "labels": {"molt.dev/state": "draining"},
                "annotations": {"molt.dev/blocked": "a test's reason", "molt.dev/policy": group},
            }
        },
    )

    status = await molt_json(sandbox, "status")

    assert status["nodes"] == 4
    assert [g["name"] for g in status["groups"]] == [group]
    assert status["inFlight"]["draining"] == [names[0]]
    assert status["blocked"] == [{"node": names[0], "policy": group, "message": "a test's reason"}]
    expiries = status["expiriesNext24h"]
    assert len(expiries) == 24
    assert expiries[5] == 1
    assert expiries[15] == 1
    assert sum(expiries) == 2
    assert status["overdue"] == 0  # the 47 h node is in the pipeline, not waiting
