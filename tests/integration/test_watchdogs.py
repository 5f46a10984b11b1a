"""``molt run`` with Watchdogs against the real control plane.

A ``probePod`` watchdog is Healthy while kube-scheduler runs; with kube-scheduler stopped
its probe pods stay Pending, and after its warm-up it fires: once within its cool-down,
not at all while snoozed, and a resolve (same PagerDuty dedup_key) once kube-scheduler is
back. The sinks post to a loopback fake of the services that refuses bodies not in their
documented shape. A TerminationPolicy whose ``pauseWhen`` names the watchdog selects no
node while it fails (followed on watch streams of Nodes and Watchdogs, in etcd revision
order) and rotates once it recovers. Meanwhile a Watchdog whose Slack Secret does not exist
is reported and keeps being checked. Afterwards neither the routing key nor the Slack URL
is anywhere a user can see (tests/support/secret_surfaces.py).
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from molt.kube.state import WATCHDOGS
from molt.kube.transport import RawApi
from molt.policy.age import parse_rfc3339_or_none
from tests.conftest import RunningSandbox
from tests.support.controller import MoltProcess
from tests.support.fake_alert_receiver import (
    PAGERDUTY_PATH,
    SLACK_PATH,
    WEBHOOK_PATH,
    FakeAlertReceiver,
)
from tests.support.kube_fleet import has_ready_nodes, install_old_fleet, install_policy
from tests.support.secret_surfaces import assert_no_secret, cluster_surfaces
from tests.support.streams import SelectionStream
from tests.support.waiting import eventually

WARMUP = 10
COOLDOWN = 30
ROUTING_KEY = f"R0UT1NG-{uuid.uuid4().hex}"


def _watchdog(name: str, check: dict[str, Any], sinks: list[Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Watchdog",
        "metadata": {"name": name},
        "spec": {
            "check": check,
            "interval": "2s",
            "warmup": f"{WARMUP}s",
            "cooldown": f"{COOLDOWN}s",
            "sinks": sinks,
            **spec,
        },
    }


def _secret(namespace: str, name: str, key: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


async def _status(kube: client.ApiClient, name: str) -> dict[str, Any]:
    found = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        GROUP, VERSION, "watchdogs", name
    )
    status: dict[str, Any] = found.get("status") or {}
    return status


async def _state(kube: client.ApiClient, name: str) -> str | None:
    return (await _status(kube, name)).get("state")


async def _condition(kube: client.ApiClient, plural: str, name: str, kind: str) -> dict[str, Any]:
    found = await client.CustomObjectsApi(kube).get_cluster_custom_object(
        GROUP, VERSION, plural, name
    )
    conditions = (found.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


async def test_a_probe_pod_watchdog_fires_alerts_once_snoozes_resolves_and_pauses_rotation(
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    suffix = uuid.uuid4().hex[:5]
    group, probe, lonely = f"wd-{suffix}", f"sched-{suffix}", f"nosecret-{suffix}"
    # Younger than the group's own maxNodeAge (48h), so only the policy would rotate them.
    await install_old_fleet(kube, group, nodes=2, age=timedelta(hours=30))
    await eventually(lambda: has_ready_nodes(kube, group, 2), what="two Ready kwok nodes")
    receiver = FakeAlertReceiver()
    await receiver.start()
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    await core.create_namespaced_secret(namespace, _secret(namespace, "pd", "key", ROUTING_KEY))
    slack_url = receiver.url(SLACK_PATH)
    await core.create_namespaced_secret(namespace, _secret(namespace, "slack", "url", slack_url))
    sinks = [
        {"webhook": {"url": receiver.url(WEBHOOK_PATH)}},
        {
            "pagerDuty": {
                "routingKey": {"namespace": namespace, "name": "pd", "key": "key"},
                "url": receiver.url(PAGERDUTY_PATH),
            }
        },
        {"slack": {"webhookUrl": {"namespace": namespace, "name": "slack", "key": "url"}}},
    ]
    missing = [{"slack": {"webhookUrl": {"namespace": namespace, "name": "absent", "key": "url"}}}]
    probe_check = {"probePod": {"namespace": namespace, "timeout": "4s"}}
    ready_check = {"nodeReadyRatio": {"minReady": "50%"}}
    for body in (_watchdog(probe, probe_check, sinks), _watchdog(lonely, ready_check, missing)):
        await custom.create_cluster_custom_object(GROUP, VERSION, "watchdogs", body)
    stream = SelectionStream(WATCHDOGS)
    await stream.start(kube)
    scheduler_stopped = False
    try:
        molt = run_molt()
        await eventually(lambda: _state_is(kube, probe, "Healthy"), what="the probe Healthy")

        # The watchdog without its Secret is reported, and keeps being checked.
        sinks_ready = await _condition(kube, "watchdogs", lonely, "SinksReady")
        assert sinks_ready.get("status") == "False", sinks_ready
        assert f"Secret {namespace}/absent" in sinks_ready["message"]
        first = (await _status(kube, lonely))["lastResult"]["time"]
        await eventually(
            lambda: _checked_after(kube, lonely, first), what="the lonely watchdog checked again"
        )
        events = await core.list_namespaced_event(
            "default", field_selector=f"involvedObject.name={lonely}"
        )
        assert "SinkMisconfigured" in {e.reason for e in events.items}

        sandbox.sandbox.stop("kube-scheduler")
        scheduler_stopped = True
        await eventually(
            lambda: _state_is(kube, probe, "Failing"), within=60, what="the probe Failing"
        )
        fired_at = time.monotonic()
        status = await _status(kube, probe)
        since = parse_rfc3339_or_none(status["failingSince"])
        alerted = parse_rfc3339_or_none(status["lastAlertTime"])
        assert since is not None
        assert alerted is not None
        assert alerted - since >= timedelta(seconds=WARMUP), "fired before its warm-up"
        assert "not Running within 4s" in status["lastResult"]["message"]
        states = [s for _, n, s in stream.states if n == probe]
        assert states[-3:] == ["Healthy", "WarmingUp", "Failing"]

        await install_policy(
            kube,
            f"{group}-paused",
            group,
            rules={"maxAge": "24h"},
            budgets=[{"maxInFlight": 1}],
            pauseWhen=[{"watchdog": probe}],
        )
        await eventually(
            lambda: _paused_by(kube, f"{group}-paused", probe), what="the policy Paused"
        )

        snooze = (datetime.now(UTC) + timedelta(seconds=COOLDOWN + 15)).isoformat()
        await RawApi(kube).merge_patch(f"{WATCHDOGS}/{probe}", {"spec": {"snoozeUntil": snooze}})
        await eventually(lambda: _state_is(kube, probe, "Snoozed"), what="the probe Snoozed")
        # Past the cool-down, still failing, still snoozed: silent.
        await asyncio.sleep(max(0.0, COOLDOWN + 3 - (time.monotonic() - fired_at)))
        assert await _state(kube, probe) == "Snoozed"
        assert len(receiver.received.get(PAGERDUTY_PATH, [])) == 1

        sandbox.sandbox.start("kube-scheduler")
        scheduler_stopped = False
        await eventually(
            lambda: _state_is(kube, probe, "Healthy"), within=60, what="the probe resolved"
        )
        await eventually(lambda: _selected(stream), within=30, what="a node selected again")
        surfaces = await cluster_surfaces(kube, sandbox.kubeconfig, molts=[molt])
        secrets = {"PagerDuty routing key": ROUTING_KEY, "Slack webhook URL": slack_url}
        assert_no_secret(surfaces, secrets)
    finally:
        if scheduler_stopped:
            sandbox.sandbox.start("kube-scheduler")
        await stream.stop()
        await receiver.stop()
        for name in (probe, lonely):
            await custom.delete_cluster_custom_object(GROUP, VERSION, "watchdogs", name)

    pager = receiver.received[PAGERDUTY_PATH]
    assert [e["event_action"] for e in pager] == ["trigger", "resolve"]
    assert pager[0]["dedup_key"] == pager[1]["dedup_key"]
    assert pager[0]["routing_key"] == ROUTING_KEY
    assert probe in pager[0]["payload"]["summary"]
    assert [m["event"] for m in receiver.received[WEBHOOK_PATH]] == ["trigger", "resolve"]
    slack = receiver.received[SLACK_PATH]
    assert len(slack) == 2
    assert all(m["text"] and m["blocks"] for m in slack)
    # No node was selected at a revision where the watchdog was failing; once it was
    # Healthy again the rotation resumed.
    recovered = max(rv for rv, n, s in stream.states if n == probe and s == "Healthy")
    held = [(node, stream.state_at(probe, rv)) for node, rv in stream.selected.items()]
    assert all(state == "Healthy" for _, state in held), (held, stream.states, stream.selected)
    assert all(rv > recovered for rv in stream.selected.values()), stream.selected


async def _state_is(kube: client.ApiClient, name: str, state: str) -> bool:
    return await _state(kube, name) == state


async def _checked_after(kube: client.ApiClient, name: str, moment: str) -> bool:
    last = (await _status(kube, name)).get("lastResult") or {}
    return bool(last.get("time")) and last["time"] > moment


async def _paused_by(kube: client.ApiClient, policy: str, watchdog: str) -> bool:
    paused = await _condition(kube, "terminationpolicies", policy, "Paused")
    return paused.get("status") == "True" and watchdog in paused.get("message", "")


async def _selected(stream: SelectionStream) -> bool:
    return bool(stream.selected)
