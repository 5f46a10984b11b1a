"""``molt run --provider baremetal`` against sushy-tools' Redfish emulator on loopback.

The emulator (a real Redfish server with its fake systems driver: power, boot override
and virtual media, each power change applied 1-11 s later) holds the hosts; the bridge
stands in for the operating system: a host powered on with the OS image inserted joins
as a kwok Node ``baremetal://<host>``, and leaves when it powers off; a host booted into
the wipe image powers itself off a second later.

A group over two racks comes up on its hosts, rotates every node by max age (each host
powered off, wiped and returned to the pool, where later launches take it again), and
a ForceRestart reaches the BMC of the node it is asked for; a host whose BMC never
answers is a launch failure of its rack, and a rack with no free host routes its share
to the rack that has some; a terminate cut short by a controller restart mid-wipe is
resumed from the host's claim and the host released. After each run the BMC password is
nowhere a user can see (tests/support/secret_surfaces.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api import GROUP, VERSION
from molt.cloud.baremetal import BareMetalProvider
from molt.cloud.baremetal.inventory import Claim
from molt.cloud.baremetal.store import CLAIMS_CONFIGMAP
from molt.policy.age import parse_rfc3339
from molt.policy.snapshot import NodeView
from tests.conftest import RunningSandbox
from tests.support.builders import instance_group
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import install_policy
from tests.support.redfish_bridge import RedfishNodeBridge
from tests.support.redfish_emulator import (
    PASSWORD,
    USERNAME,
    BlackHole,
    FakeSystem,
    ImageServer,
    RedfishEmulator,
)
from tests.support.secret_surfaces import assert_no_secret, cluster_surfaces
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

SECRET = "bmc-creds"


@dataclass
class Lab:
    images: ImageServer
    emulator: RedfishEmulator
    systems: list[FakeSystem]

    @property
    def os_image(self) -> str:
        return self.images.image_url("os.iso")

    @property
    def wipe_image(self) -> str:
        return self.images.image_url("wipe.iso")

    def host(self, system: FakeSystem, zone: str, address: str | None = None) -> dict[str, Any]:
        return {
            "name": system.name,
            "zone": zone,
            "mac": system.mac,
            "redfish": {"address": address or self.emulator.url, "systemId": system.system_id},
        }

    def forced(self, host: str, state: str) -> bool:
        """Whether the emulator notified a requested power change ``state`` on ``host``."""
        return any(
            n.get("name") == host and (n.get("pending_power") or {}).get("power_state") == state
            for n in self.images.seen()
        )


def _systems() -> list[FakeSystem]:
    return [
        FakeSystem(f"r{rack}-h0{index}", f"52:54:00:00:0{rack}:0{index}", f"10.{rack}.0.1{index}")
        for rack in (1, 2)
        for index in (1, 2, 3, 4, 5)
    ]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """The image server (and notification sink) and the emulator; both always stopped."""
    systems = _systems()
    with (
        ImageServer() as images,
        RedfishEmulator(tmp_path, systems, images.notify_url) as emulator,
    ):
        yield Lab(images, emulator, systems)


@pytest.fixture
async def controller_namespace(
    kube: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """``molt run``'s namespace: the BMC credentials Secret, and where claims are kept."""
    monkeypatch.setenv("MOLT_NAMESPACE", namespace)
    await client.CoreV1Api(kube).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET),
            data={
                "username": base64.b64encode(USERNAME.encode()).decode(),
                "password": base64.b64encode(PASSWORD.encode()).decode(),
            },
        ),
    )
    return namespace


async def _claims(kube: client.ApiClient, namespace: str) -> dict[str, Claim]:
    try:
        found = await client.CoreV1Api(kube).read_namespaced_config_map(CLAIMS_CONFIGMAP, namespace)
    except ApiException as error:
        if error.status == 404:
            return {}
        raise
    return {host: Claim.from_json(text) for host, text in (found.data or {}).items()}


async def _ready_by_zone(kube: client.ApiClient, group: str) -> dict[str, str]:
    """Ready node -> its zone label."""
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return {
        n.metadata.name: n.metadata.labels.get("topology.kubernetes.io/zone", "")
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }


async def _ready_uids(kube: client.ApiClient, group: str) -> set[str]:
    """The UIDs of the group's Ready nodes (a reused host's Node has its old name)."""
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return {
        n.metadata.uid
        for n in nodes.items
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    }


async def _create_group(kube: client.ApiClient, name: str, **spec: Any) -> None:
    await client.CustomObjectsApi(kube).create_cluster_custom_object(
        GROUP, VERSION, "instancegroups", instance_group(name, provider="baremetal", **spec)
    )


async def test_a_group_over_two_racks_comes_up_rotates_by_max_age_on_reused_hosts_and_reboots(
    lab: Lab,
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    controller_namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    namespace = controller_namespace
    group = f"bm{uuid.uuid4().hex[:6]}"
    hosts = [lab.host(s, "rack-1" if s.name.startswith("r1") else "rack-2") for s in lab.systems]
    await _create_group(
        kube,
        group,
        minSize=0,
        maxSize=10,
        replicas=6,
        zones=["rack-1", "rack-2"],
        template={
            "instanceTypes": ["metal"],
            "image": lab.os_image,
            "baremetal": {
                "credentialsSecret": SECRET,
                "hosts": hosts,
                "bmcTimeout": "5s",
                "reprovision": {"image": lab.wipe_image, "timeout": "2m"},
            },
        },
        strategy={"type": "RollingReplace", "maxSurge": 4, "maxUnavailable": 0},
        # A rack whose spare is still being wiped is out of capacity for a moment only.
        health={"capacityCooldown": "10s"},
    )
    async with RedfishNodeBridge(
        kube, lab.emulator.url, lab.systems, lab.os_image, lab.wipe_image
    ) as bridge:
        molt = run_molt("--provider", "baremetal")

        async def three_per_rack() -> dict[str, str] | None:
            ready = await _ready_by_zone(kube, group)
            return ready if Counter(ready.values()) == {"rack-1": 3, "rack-2": 3} else None

        first = await eventually(three_per_rack, within=120, interval=1, what="3 nodes per rack")
        first_uids = await _ready_uids(kube, group)
        claims = await _claims(kube, namespace)
        assert {h for h, c in claims.items() if c.state == "running"} == set(first)
        core = client.CoreV1Api(kube)
        for name in first:
            node = await core.read_node(name)
            # The node's age counts from the host's power-on, as its claim recorded it.
            launched = parse_rfc3339(node.metadata.annotations["molt.dev/launched-at"])
            assert launched == claims[name].powered_on_at
            assert node.spec.provider_id == f"baremetal://{name}"

        await install_policy(
            kube, f"rotate-{group}", group, rules={"maxAge": "60s"}, budgets=[{"maxInFlight": 4}]
        )

        async def rotated() -> bool:
            # Replacements age too and rotate in turn: enough that none of the first is
            # left and each rack still has its three Ready.
            ready = Counter((await _ready_by_zone(kube, group)).values())
            fresh = not await _ready_uids(kube, group) & first_uids
            return fresh and ready["rack-1"] >= 3 and ready["rack-2"] >= 3

        await eventually(rotated, within=300, interval=1, what="every first node replaced")
        await client.CustomObjectsApi(kube).delete_cluster_custom_object(
            GROUP, VERSION, "terminationpolicies", f"rotate-{group}"
        )

        async def settled() -> bool:
            found = await _claims(kube, namespace)
            running = [c for c in found.values() if c.state == "running"]
            ready = Counter((await _ready_by_zone(kube, group)).values())
            return len(running) == len(found) == 6 and ready == {"rack-1": 3, "rack-2": 3}

        await eventually(settled, within=150, interval=1, what="6 hosts running, the rest released")
        for name in first:
            assert lab.forced(name, "Off"), f"{name} was never powered off"
            assert bridge.wipes[name] >= 1, f"{name} was never wiped"
        reused = [h for h, joined in bridge.joins.items() if joined >= 2]
        assert reused, f"no host was claimed again after its wipe: {dict(bridge.joins)}"

        # Remediation's first step: a ForceRestart through the BMC of the node's host.
        target = sorted(await _ready_by_zone(kube, group))[0]
        before = (await _claims(kube, namespace))[target]
        provider = BareMetalProvider(kube, namespace=namespace)
        node = await core.read_node(target)
        await provider.reboot(
            NodeView(
                name=target,
                created=node.metadata.creation_timestamp,
                provider_id=node.spec.provider_id,
            )
        )
        await eventually(
            lambda: _true(lab.forced(target, "ForceRestart")), within=30, what="ForceRestart"
        )

        async def back() -> bool:
            return target in await _ready_by_zone(kube, group) and bridge.joins[target] >= 2

        await eventually(back, within=60, interval=1, what="the rebooted node Ready again")
        after = (await _claims(kube, namespace))[target]
        assert after.state == "running"
        assert after.powered_on_at == before.powered_on_at  # the same launch: rebooted in place
        assert not bridge.errors, bridge.errors[-3:]
    await _assert_no_password(sandbox, kube, molt)


async def _assert_no_password(
    sandbox: RunningSandbox, kube: client.ApiClient, *molts: MoltProcess
) -> None:
    """The BMC password the run logged in with is nowhere a user can see."""
    surfaces = await cluster_surfaces(kube, sandbox.kubeconfig, molts=molts)
    assert_no_secret(surfaces, {"BMC password": PASSWORD})


async def _true(value: bool) -> bool:
    return value


async def test_a_hung_bmc_fails_its_rack_and_an_empty_rack_routes_its_share_away(
    lab: Lab,
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    controller_namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    namespace = controller_namespace
    group = f"bf{uuid.uuid4().hex[:6]}"
    hung = BlackHole()
    try:
        rack1, rack3 = lab.systems[0], lab.systems[5:8]
        hosts = [lab.host(rack1, "rack-1", address=hung.url)]  # its BMC never answers
        hosts += [lab.host(s, "rack-3") for s in rack3]  # rack-2 has no host at all
        await _create_group(
            kube,
            group,
            minSize=0,
            maxSize=3,
            replicas=3,
            zones=["rack-1", "rack-2", "rack-3"],
            template={
                "instanceTypes": ["metal"],
                "image": lab.os_image,
                "baremetal": {"credentialsSecret": SECRET, "hosts": hosts, "bmcTimeout": "2s"},
            },
        )
        async with RedfishNodeBridge(
            kube, lab.emulator.url, rack3, lab.os_image, lab.wipe_image
        ) as bridge:
            molt = run_molt("--provider", "baremetal")

            async def all_in_rack3() -> bool:
                ready = await _ready_by_zone(kube, group)
                return Counter(ready.values()) == {"rack-3": 3}

            await eventually(all_in_rack3, within=150, interval=1, what="3 nodes in rack-3")
            assert not bridge.errors, bridge.errors[-3:]

        async def group_events() -> list[tuple[str, str]]:
            events = await client.CoreV1Api(kube).list_namespaced_event(
                "default", field_selector=f"involvedObject.name={group}"
            )
            return [(e.reason, e.message) for e in events.items]

        async def hung_rack_failed() -> list[tuple[str, str]] | None:
            # The hung call is given up only after its BMC's time bound (several
            # bmcTimeouts), which on a loaded machine can come after rack-3 has filled.
            said = await group_events()
            failed = [m for r, m in said if r == "LaunchFailed"]
            reported = any(
                "rack-1/on-demand" in m and rack1.name in m and "did not answer" in m
                for m in failed
            )
            return said if reported else None

        said = await eventually(hung_rack_failed, within=60, what="rack-1's launch failure")
        failed = [m for r, m in said if r == "LaunchFailed"]
        assert not any("rack-3" in m for m in failed), said
        assert any(r == "CellUnavailable" and "rack-2" in m for r, m in said), said

        # The hung host's claim is given up (just after its failure is reported): the
        # host is nobody's again, and the three of rack-3 are the group's.
        async def given_up() -> dict[str, Claim] | None:
            found = await _claims(kube, namespace)
            return found if rack1.name not in found else None

        claims = await eventually(given_up, within=15, what="the hung host released")
        assert sorted(claims) == sorted(s.name for s in rack3)
        assert json.dumps(sorted(c.zone for c in claims.values())) == json.dumps(["rack-3"] * 3)
        await _assert_no_password(sandbox, kube, molt)
    finally:
        hung.close()


async def test_a_terminate_cut_short_by_a_restart_resumes_and_releases_the_host(
    lab: Lab,
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    controller_namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    namespace = controller_namespace
    group = f"br{uuid.uuid4().hex[:6]}"
    system = lab.systems[0]
    await _create_group(
        kube,
        group,
        minSize=0,
        maxSize=1,
        replicas=1,
        zones=["rack-1"],
        template={
            "instanceTypes": ["metal"],
            "image": lab.os_image,
            "baremetal": {
                "credentialsSecret": SECRET,
                "hosts": [lab.host(system, "rack-1")],
                "reprovision": {"image": lab.wipe_image, "timeout": "5m"},
            },
        },
    )
    async with RedfishNodeBridge(
        kube, lab.emulator.url, [system], lab.os_image, lab.wipe_image, wipe_seconds=3600
    ) as bridge:
        first = run_molt("--provider", "baremetal")
        await eventually(
            lambda: _has_ready(kube, group, 1), within=60, interval=1, what="the node Ready"
        )
        await client.CustomObjectsApi(kube).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "instancegroups",
            group,
            {"spec": {"replicas": 0}},
            _content_type="application/merge-patch+json",
        )

        async def wiping() -> bool:
            claim = (await _claims(kube, namespace)).get(system.name)
            return claim is not None and claim.state == "wiping"

        await eventually(wiping, within=90, interval=1, what="the host wiping")
        assert first.stop() == 0
        # The wipe finishes while no controller runs; the claim still says "wiping".
        bridge.wipe_seconds = 0.0
        await eventually(
            lambda: _true(bridge.wipes[system.name] == 1), within=30, what="the wipe done"
        )
        await eventually(
            lambda: _reads_off(bridge, system), within=30, interval=0.5, what="the host off"
        )
        assert (await _claims(kube, namespace))[system.name].state == "wiping"

        restarted = run_molt("--provider", "baremetal", name="restarted")

        async def released() -> bool:
            return system.name not in await _claims(kube, namespace)

        await eventually(released, within=60, interval=1, what="the host released")
        assert bridge.joins[system.name] == 1  # nothing launched it again
        assert not bridge.errors, bridge.errors[-3:]
    await _assert_no_password(sandbox, kube, first, restarted)


async def _has_ready(kube: client.ApiClient, group: str, count: int) -> bool:
    return len(await _ready_by_zone(kube, group)) == count


async def _reads_off(bridge: RedfishNodeBridge, system: FakeSystem) -> bool:
    power, _ = await asyncio.to_thread(bridge.read, system)
    return power == "Off"
