"""The job action against the real control plane: kube-controller-manager runs each Job,
kwok's pod stages complete its pod, or fail it with a termination message when the pod
asks to (``kwok.molt.dev/fail-with``, src/molt/sandbox/kwok.yaml).

One rotation of two groups: in the first, a preTerminate Job (inline template) completes
and the node goes; in the second, a preDrain Job (from a ConfigMap) fails, is retried once
(``retries: 1``, a new Job each time) and then holds the node cordoned, with the pod's
termination message in ``molt.dev/blocked``. Molt sees each Job end through its watch of
that Job.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import yaml
from kubernetes_asyncio import client

from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    has_ready_nodes,
    install_old_fleet,
    install_policy,
    node_annotation,
    node_gone,
)
from tests.support.waiting import eventually

FAILURE = "backup target unreachable: 10.9.9.9:873"


def job_spec(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "template": {
            "metadata": {"annotations": annotations or {}},
            "spec": {"containers": [{"name": "hook", "image": "busybox"}]},
        }
    }


async def jobs_of(kube: client.ApiClient, namespace: str, node: str) -> list[Any]:
    found = await client.BatchV1Api(kube).list_namespaced_job(
        namespace, label_selector=f"molt.dev/node={node}"
    )
    return sorted(found.items, key=lambda j: j.metadata.name)


def env_of(job: Any) -> dict[str, str]:
    return {e.name: e.value for e in job.spec.template.spec.containers[0].env}


def conditions(job: Any) -> set[str]:
    return {c.type for c in job.status.conditions or [] if c.status == "True"}


async def test_a_complete_job_lets_the_node_go_and_a_failed_one_holds_it(
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    core = client.CoreV1Api(kube)
    suffix = uuid.uuid4().hex[:5]
    ok_group, failing_group = f"jobok-{suffix}", f"jobfail-{suffix}"
    await core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="backup-job"),
            data={
                "template": yaml.safe_dump(
                    {"kind": "Job", "spec": job_spec({"kwok.molt.dev/fail-with": FAILURE})}
                )
            },
        ),
    )
    age = timedelta(hours=60)
    (leaving,) = await install_old_fleet(kube, ok_group, nodes=1, age=age, surge=1)
    (held,) = await install_old_fleet(kube, failing_group, nodes=1, age=age, surge=1)
    await eventually(lambda: has_ready_nodes(kube, ok_group, 1), what="a Ready node")
    complete = {
        "name": "drain-report",
        "timeout": "60s",
        "job": {"namespace": namespace, "template": job_spec(), "ttlSecondsAfterFinished": 300},
    }
    failing = {
        "name": "backup",
        "timeout": "60s",
        "retries": 1,
        "job": {"namespace": namespace, "templateConfigMap": {"name": "backup-job"}},
    }
    await install_policy(
        kube,
        f"{ok_group}-48h",
        ok_group,
        rules={"maxAge": "48h"},
        lifecycle={"preTerminate": [complete]},
    )
    await install_policy(
        kube,
        f"{failing_group}-48h",
        failing_group,
        rules={"maxAge": "48h"},
        lifecycle={"preDrain": [failing]},
    )
    molt = run_molt()

    await eventually(lambda: node_gone(kube, leaving), within=90, interval=0.5, what="node gone")
    (finished,) = await jobs_of(kube, namespace, leaving)
    assert "Complete" in conditions(finished), finished.status
    assert finished.spec.ttl_seconds_after_finished == 300
    env = env_of(finished)
    assert env["MOLT_NODE"] == leaving
    assert env["MOLT_GROUP"] == ok_group
    assert env["MOLT_HOOK"] == "preTerminate"
    assert env["MOLT_REASON"]
    assert env["MOLT_NODE_ADDRESSES"]

    async def blocked() -> bool:
        text = await node_annotation(kube, held, "molt.dev/blocked")
        return bool(text and "retries exhausted" in text)

    await eventually(blocked, within=90, interval=0.5, what="the failing Job holds its node")
    message = await node_annotation(kube, held, "molt.dev/blocked") or ""
    assert FAILURE in message, message
    assert "preDrain action backup failed (2x)" in message, message
    tries = await jobs_of(kube, namespace, held)
    assert len(tries) >= 2
    assert [j.metadata.name[-2:] for j in tries[:2]] == ["-1", "-2"]
    for job in tries[:2]:
        assert "Failed" in conditions(job), job.status
        assert env_of(job)["MOLT_HOOK"] == "preDrain"
    node = await core.read_node(held)
    assert node.spec.unschedulable
    actions = json.loads(node.metadata.annotations["molt.dev/actions"])
    assert actions["preDrain/tp/backup"]["state"] == "failed"
    assert FAILURE in actions["preDrain/tp/backup"]["error"]
    assert not await node_gone(kube, held)
    # Each Job's end came through the watch of it, not through a read after the fact.
    ended = [line for line in molt.log().splitlines() if "job.ended" in line]
    for job in [finished, *tries[:2]]:
        assert any(job.metadata.name in e and "seen=watch" in e for e in ended), ended
    assert molt.alive(), molt.log()
