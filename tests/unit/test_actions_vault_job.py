"""The vault and job action kinds on their own: the vault attempt's states against the
fake Vault (an in-process loopback server, tests/support/fake_vault.py), and the Job
action's naming, environment and outcomes against the fake cluster ports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from molt.actions.base import ActionContext, ActionFailedError
from molt.actions.job import JobActionKind, job_body, job_name
from molt.actions.objects import job_state, termination_messages
from molt.actions.vault import VaultActionKind, vault_address
from molt.api.lifecycle import LifecycleAction
from molt.kube.projections import node_view
from molt.policy.snapshot import NodeView
from molt.ports import ObjectRef
from tests.support.fake_ports import FakeCluster
from tests.support.fake_vault import FakeVault

TOKEN = "s.unit-test-token-0123456789"
NODE = NodeView(
    name="node-a",
    created=datetime(2026, 1, 1, tzinfo=UTC),
    labels={"molt.dev/instance-group": "db"},
    uid="uid-a",
    addresses=("10.0.0.7", "node-a.internal"),
)


def context(attempt: int = 1, node: NodeView = NODE) -> ActionContext:
    return ActionContext(
        node, "preTerminate", "maxAge", "p", key="preTerminate/ig/step", attempt=attempt
    )


def vault_action(address: str, timeout: str = "5s") -> LifecycleAction:
    return LifecycleAction.model_validate(
        {
            "name": "step",
            "timeout": timeout,
            "vault": {
                "address": address,
                "tokenSecret": {"namespace": "vault", "name": "molt", "key": "token"},
            },
        }
    )


@pytest.fixture
async def vault() -> AsyncIterator[FakeVault]:
    fake = FakeVault(token=TOKEN, takeover_seconds=0.2)
    fake.add("node-a", "active")
    fake.add("node-b")
    await fake.start()
    yield fake
    await fake.stop()


def cluster_with(token: str = TOKEN) -> FakeCluster:
    cluster = FakeCluster()
    cluster.put_secret("vault", "molt", {"token": token})
    return cluster


def test_the_address_names_the_node() -> None:
    assert vault_address("https://{node.address}:8200/", NODE) == "https://10.0.0.7:8200"
    assert vault_address("http://127.0.0.1:1/{node.name}", NODE) == "http://127.0.0.1:1/node-a"
    bare = NodeView(name="x", created=NODE.created)
    with pytest.raises(ActionFailedError, match="no address"):
        vault_address("https://{node.address}", bare)


async def test_the_active_server_steps_down_and_another_takes_over(vault: FakeVault) -> None:
    kind = VaultActionKind(cluster_with(), poll_seconds=0.05)
    await kind.attempt(vault_action(vault.url()), context())
    assert [s.member for s in vault.step_downs] == ["node-a"]
    assert vault.active == "node-b"


async def test_a_standby_or_sealed_server_is_left_alone(vault: FakeVault) -> None:
    kind = VaultActionKind(cluster_with())
    vault.add("node-c", "sealed")
    for name in ("node-b", "node-c"):
        node = NodeView(name=name, created=NODE.created)
        await kind.attempt(vault_action(vault.url()), context(node=node))
    assert vault.step_downs == []
    assert not any(method == "PUT" for _, method, _ in vault.requests)
    assert vault.active == "node-a"


async def test_a_wrong_token_fails_clearly_and_never_shows(vault: FakeVault) -> None:
    wrong = "s.wrong-token-9876543210"
    kind = VaultActionKind(cluster_with(wrong))
    with pytest.raises(ActionFailedError) as failure:
        await kind.attempt(vault_action(vault.url()), context())
    assert "403 permission denied" in str(failure.value)
    assert wrong not in str(failure.value)
    assert TOKEN not in str(failure.value)
    assert vault.refused == ["node-a"]
    assert vault.active == "node-a"


async def test_a_missing_secret_key_fails(vault: FakeVault) -> None:
    kind = VaultActionKind(FakeCluster())
    with pytest.raises(ActionFailedError, match="secret vault/molt has no key token"):
        await kind.attempt(vault_action(vault.url()), context())


async def test_no_takeover_within_the_timeout_fails(vault: FakeVault) -> None:
    del vault.members["node-b"]  # alone: it takes the lock back, nobody else is active
    kind = VaultActionKind(cluster_with(), poll_seconds=0.05)
    with pytest.raises(ActionFailedError, match="still active after 1s"):
        await kind.attempt(vault_action(vault.url(), timeout="1s"), context())


def job_action(**job: Any) -> LifecycleAction:
    return LifecycleAction.model_validate(
        {"name": "backup", "timeout": "3s", "retries": 1, "job": {"namespace": "ops", **job}}
    )


TEMPLATE = {
    "template": {
        "spec": {
            "containers": [
                {"name": "c", "image": "busybox", "env": [{"name": "MOLT_NODE", "value": "x"}]}
            ]
        }
    }
}


def test_job_names_are_stable_per_attempt_and_fit_a_label() -> None:
    first = job_name(context(1), "backup")
    assert first == job_name(context(1), "backup")
    assert first != job_name(context(2), "backup")
    assert first.startswith("molt-backup-node-a-")
    assert first.endswith("-1")
    other = NodeView(name="node-a", created=NODE.created, uid="uid-b")  # same name, new node
    assert job_name(context(1, other), "backup") != first
    long = NodeView(name="n" * 250, created=NODE.created)
    assert len(job_name(context(20, long), "a" * 63)) <= 63


def test_the_job_carries_the_node_environment_once() -> None:
    action = job_action(template=TEMPLATE)
    assert action.job is not None
    body = job_body("j", TEMPLATE, action.job, "backup", context())
    env = body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "MOLT_NODE", "value": "node-a"},
        {"name": "MOLT_NODE_ADDRESSES", "value": "10.0.0.7,node-a.internal"},
        {"name": "MOLT_GROUP", "value": "db"},
        {"name": "MOLT_REASON", "value": "maxAge"},
        {"name": "MOLT_HOOK", "value": "preTerminate"},
    ]
    assert body["spec"]["backoffLimit"] == 0
    assert body["spec"]["ttlSecondsAfterFinished"] == 600
    assert body["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert TEMPLATE["template"]["spec"]["containers"][0]["env"][0]["value"] == "x"  # a copy


async def test_a_complete_job_succeeds_and_a_restart_finds_it() -> None:
    cluster = FakeCluster()
    kind = JobActionKind(cluster, poll_seconds=0.01)
    action = job_action(template=TEMPLATE)
    name = job_name(context(), "backup")
    before_restart = {"apiVersion": "batch/v1", "kind": "Job"}
    await cluster.create_object({**before_restart, "metadata": {"name": name, "namespace": "ops"}})
    cluster.finish_job("ops", name, "Complete")
    await kind.attempt(action, context())
    assert list(cluster.jobs()) == [("ops", name)]


async def test_a_failed_job_fails_with_its_message() -> None:
    cluster = FakeCluster()
    cluster.put_config_map(
        "ops",
        "tpl",
        {
            "template": "kind: Job\nspec:\n  template:\n"
            "    spec:\n      containers: [{name: c, image: i}]\n"
        },
    )
    kind = JobActionKind(cluster, poll_seconds=0.01)
    action = job_action(templateConfigMap={"name": "tpl"})
    name = job_name(context(), "backup")
    cluster.job_endings[("ops", name)] = ("Failed", "backup: disk full")
    with pytest.raises(ActionFailedError, match="failed: backup: disk full"):
        await kind.attempt(action, context())
    assert cluster.jobs()[("ops", name)]["spec"]["template"]["spec"]["containers"][0]["env"]


async def test_a_job_past_its_timeout_is_deleted() -> None:
    cluster = FakeCluster()
    kind = JobActionKind(cluster, poll_seconds=0.05)
    action = LifecycleAction.model_validate(
        {"name": "backup", "timeout": "1s", "job": {"namespace": "ops", "template": TEMPLATE}}
    )
    with pytest.raises(ActionFailedError, match="did not finish within 1s; deleted"):
        await kind.attempt(action, context())
    assert cluster.deleted_objects == [
        ObjectRef("batch/v1", "Job", job_name(context(), "backup"), "ops")
    ]


JOB = ObjectRef("batch/v1", "Job", job_name(context(), "backup"), "ops")


async def watching(cluster: FakeCluster, watches: int) -> None:
    """Until the action has opened ``watches`` watches of its Job."""
    for _ in range(400):
        if len(cluster.watches) >= watches:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{len(cluster.watches)} watches opened, not {watches}")


@pytest.mark.parametrize(
    ("condition", "message", "error"),
    [("Complete", "", None), ("Failed", "backup: disk full", "failed: backup: disk full")],
)
async def test_a_job_ending_while_watched_ends_the_attempt_without_another_read(
    condition: str, message: str, error: str | None
) -> None:
    cluster = FakeCluster()
    # A second read would come a minute later: the attempt may only end by the watch.
    kind = JobActionKind(cluster, poll_seconds=60)
    attempt = asyncio.create_task(kind.attempt(job_action(template=TEMPLATE), context()))
    await watching(cluster, 1)
    read_version = cluster.objects[JOB]["metadata"]["resourceVersion"]
    assert cluster.watches == [(JOB, read_version)]
    cluster.finish_job("ops", JOB.name, condition, message)
    if error is None:
        await asyncio.wait_for(attempt, 1)
    else:
        with pytest.raises(ActionFailedError, match=error):
            await asyncio.wait_for(attempt, 1)
    assert cluster.object_reads.count(JOB) == 1
    assert len(cluster.watches) == 1


async def test_an_ended_watch_is_followed_by_a_read_and_a_watch_from_its_version() -> None:
    cluster = FakeCluster()
    kind = JobActionKind(cluster, poll_seconds=0.01)
    attempt = asyncio.create_task(kind.attempt(job_action(template=TEMPLATE), context()))
    await watching(cluster, 1)
    cluster.end_watches()
    await watching(cluster, 2)
    assert cluster.object_reads.count(JOB) == 2
    cluster.finish_job("ops", JOB.name, "Complete")
    await asyncio.wait_for(attempt, 1)
    assert cluster.object_reads.count(JOB) == 2


async def test_an_end_the_watch_missed_is_seen_by_the_read_after_it() -> None:
    """As after a 410 Gone: the change that ended the Job was compacted away before the
    watch delivered it, so only the next read shows it."""
    cluster = FakeCluster()
    kind = JobActionKind(cluster, poll_seconds=0.01)
    attempt = asyncio.create_task(kind.attempt(job_action(template=TEMPLATE), context()))
    await watching(cluster, 1)
    cluster.objects[JOB]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    cluster.end_watches()
    await asyncio.wait_for(attempt, 1)
    assert cluster.object_reads.count(JOB) == 2
    assert len(cluster.watches) == 1


async def test_a_job_deleted_while_watched_fails_the_attempt() -> None:
    cluster = FakeCluster()
    kind = JobActionKind(cluster, poll_seconds=60)
    attempt = asyncio.create_task(kind.attempt(job_action(template=TEMPLATE), context()))
    await watching(cluster, 1)
    await cluster.delete_object(JOB)
    with pytest.raises(ActionFailedError, match="is gone before it finished"):
        await asyncio.wait_for(attempt, 1)


def test_job_state_and_termination_messages_from_the_api_objects() -> None:
    running = {"status": {"conditions": [{"type": "Failed", "status": "False"}]}}
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    failed = {
        "status": {
            "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                },
            ]
        }
    }
    assert job_state(running) == ("running", "")
    assert job_state(done) == ("complete", "")
    assert job_state(failed) == (
        "failed",
        "BackoffLimitExceeded: Job has reached the specified backoff limit",
    )
    pod = {
        "status": {
            "containerStatuses": [
                {"state": {"terminated": {"exitCode": 1, "message": "disk full\n"}}},
                {"state": {"terminated": {"exitCode": 0, "message": "sidecar done"}}},
                {"state": {"running": {}}},
            ]
        }
    }
    assert termination_messages([pod, pod]) == ["disk full"]


def test_a_node_lists_its_addresses_internal_first() -> None:
    raw = {
        "metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": "n.example"},
                {"type": "InternalIP", "address": "10.0.0.9"},
                {"type": "ExternalIP", "address": "203.0.113.9"},
                {"type": "InternalIP", "address": "10.0.0.9"},
            ]
        },
    }
    assert node_view(raw).addresses == ("10.0.0.9", "n.example", "203.0.113.9")
