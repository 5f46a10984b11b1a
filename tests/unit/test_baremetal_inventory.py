"""The baremetal provider's pure parts: the template's validation, host claims as stored,
which host is free, and which claimed host a Node is."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient
from pydantic import ValidationError

from molt.api import InstanceGroup
from molt.api.instancegroup import BareMetalHost, Template
from molt.cloud.baremetal.inventory import (
    MAC_KEY,
    Claim,
    NodeMatch,
    claim_hosts,
    free_hosts,
    host_for_node,
    host_of_provider_id,
    live_in,
    match_node,
    new_claim,
    node_mac,
    normalise_mac,
    provider_id,
    release,
)
from molt.cloud.baremetal.provider import BareMetalProvider
from molt.cloud.provider import CellRef, ProviderError
from molt.policy.snapshot import NodeView
from tests.support.builders import instance_group

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _host(name: str, zone: str, ip: str | None = None, mac: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "zone": zone,
        "redfish": {"address": "http://127.0.0.1:8000", "systemId": f"sys-{name}"},
    }
    if ip:
        entry["ip"] = ip
    if mac:
        entry["mac"] = mac
    return entry


def _template(**baremetal: Any) -> dict[str, Any]:
    block = {"credentialsSecret": "bmc", "hosts": [_host("r1-h01", "rack-1")], **baremetal}
    return {"instanceTypes": ["metal"], "image": "http://127.0.0.1/os.iso", "baremetal": block}


def _group(**change: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "baremetal",
        "zones": ["rack-1", "rack-2"],
        "minSize": 0,
        "maxSize": 4,
        "replicas": 2,
        "template": _template(),
    }
    spec.update(change)
    return instance_group(**spec)


def test_a_baremetal_group_with_hosts_in_its_racks_parses() -> None:
    group = InstanceGroup.model_validate(_group())
    bare = group.spec.template.baremetal
    assert bare is not None
    assert bare.boot == "VirtualMedia"
    assert bare.hosts[0].redfish.system_id == "sys-r1-h01"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"template": {"instanceTypes": ["metal"], "image": "x"}}, "needs template.baremetal"),
        (
            {"template": {**_template(), "image": None}},
            "boots from virtual media needs template.image",
        ),
        (
            {"template": _template(hosts=[_host("r9-h01", "rack-9")])},
            "every host's zone in template.baremetal.hosts must be in zones",
        ),
        (
            {
                "template": _template(
                    hosts=[
                        {**_host("a", "rack-1"), "redfish": {"address": "ftp://x", "systemId": "1"}}
                    ]
                )
            },
            "String should match pattern",
        ),
        ({"template": _template(hosts=[_host("Bad_Name", "rack-1")])}, "String should match"),
        (
            {"template": _template(hosts=[_host("a", "rack-1"), _host("a", "rack-2")])},
            "lists a host name twice",
        ),
        (
            {
                "template": _template(
                    hosts=[
                        _host("a", "rack-1", mac="52:54:00:00:01:01"),
                        _host("b", "rack-2", mac="52:54:00:00:01:01".upper()),
                    ]
                )
            },
            "lists a MAC address twice",
        ),
    ],
)
def test_invalid_baremetal_groups_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InstanceGroup.model_validate(_group(**change))


def test_a_pxe_group_needs_no_image() -> None:
    template = {**_template(boot="PXE"), "image": None}
    InstanceGroup.model_validate(_group(template=template))


def test_provider_ids_name_the_host_and_nothing_else() -> None:
    assert provider_id("r1-h01") == "baremetal://r1-h01"
    assert host_of_provider_id("baremetal://r1-h01") == "r1-h01"
    assert host_of_provider_id("aws:///eu-west-1a/i-1") is None
    assert host_of_provider_id("baremetal://") is None
    assert host_of_provider_id(None) is None


def _claim(host: str, zone: str = "rack-1", **change: Any) -> Claim:
    template = Template.model_validate(_template(reprovision={"image": "http://w/wipe.iso"}))
    base = BareMetalHost.model_validate(
        _host(host, zone, ip=change.pop("ip", None), mac=change.pop("mac", None))
    )
    claim = new_claim(CellRef("g", "rev1", zone, "on-demand"), base, template, NOW)
    return claim.moved(change.pop("state", claim.state), **change)


def test_a_claim_carries_what_a_terminate_needs_and_survives_its_json() -> None:
    claim = _claim("r1-h01", state="running", powered_on_at=NOW)
    assert claim.wipe_image == "http://w/wipe.iso"
    assert claim.wipe_timeout == 1800.0
    assert claim.secret == "bmc"
    assert claim.address == "http://127.0.0.1:8000"
    assert Claim.from_json(claim.to_json()) == claim
    with_mac = _claim("r1-h01", mac="52:54:00:AB:01:01")
    assert with_mac.mac == "52:54:00:ab:01:01"  # normalised when claimed
    assert Claim.from_json(with_mac.to_json()) == with_mac


def test_a_claim_keeps_its_times_to_the_second_as_they_are_stored() -> None:
    claim = _claim("r1-h01", powered_on_at=NOW.replace(microsecond=123456))
    assert claim.powered_on_at == NOW
    assert Claim.from_json(claim.to_json()).powered_on_at == claim.powered_on_at


def test_a_stored_value_that_is_not_a_claim_is_refused() -> None:
    with pytest.raises(ValueError, match="not a host claim"):
        Claim.from_json('{"host": "x"}')
    with pytest.raises(ValueError, match="not a host claim"):
        Claim.from_json("not json")


def test_free_hosts_are_the_racks_unclaimed_hosts_not_held_back() -> None:
    hosts = [
        BareMetalHost.model_validate(_host(name, zone))
        for name, zone in [("a", "rack-1"), ("b", "rack-1"), ("c", "rack-1"), ("d", "rack-2")]
    ]
    claims = {"a": _claim("a")}
    assert [h.name for h in free_hosts(hosts, "rack-1", claims)] == ["b", "c"]
    assert [h.name for h in free_hosts(hosts, "rack-1", claims, held_back={"b"})] == ["c"]
    assert free_hosts(hosts, "rack-3", claims) == []


def test_a_node_is_matched_by_provider_id_else_by_a_claimed_hosts_ip() -> None:
    claims = {"a": _claim("a", ip="10.1.0.11"), "b": _claim("b")}
    assert host_for_node("baremetal://b", (), claims) == "b"
    assert host_for_node(None, ("10.1.0.11",), claims) == "a"
    assert host_for_node("", ("10.9.9.9",), claims) is None
    # Another provider's node is never taken for a host, whatever its address.
    assert host_for_node("aws:///z/i-1", ("10.1.0.11",), claims) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("52:54:00:AB:01:01", "52:54:00:ab:01:01"),
        ("52-54-00-ab-01-01", "52:54:00:ab:01:01"),  # as a label value must spell it
        (" 52:54:00:ab:01:01 ", "52:54:00:ab:01:01"),
        ("52:54:00:ab:01", None),
        ("52:54:00:ab:01:0g", None),
        ("525400ab0101", None),
        ("", None),
        (None, None),
    ],
)
def test_macs_are_normalised_across_case_and_separators(
    value: str | None, expected: str | None
) -> None:
    assert normalise_mac(value) == expected


def test_a_nodes_mac_is_read_from_its_label_else_its_annotation() -> None:
    assert node_mac({MAC_KEY: "52-54-00-00-01-01"}, {}) == "52:54:00:00:01:01"
    assert node_mac({}, {MAC_KEY: "52:54:00:00:01:02"}) == "52:54:00:00:01:02"
    assert node_mac({MAC_KEY: "52-54-00-00-01-01"}, {MAC_KEY: "52:54:00:00:01:02"}) == (
        "52:54:00:00:01:01"
    )
    assert node_mac({MAC_KEY: "not-a-mac"}, {}) is None
    assert node_mac({"other/mac": "52:54:00:00:01:01"}, {}) is None


def test_a_node_without_a_provider_id_is_matched_by_its_mac() -> None:
    claims = {
        "a": _claim("a", mac="52:54:00:00:01:01"),
        "b": _claim("b", mac="52:54:00:00:01:02"),
    }
    for spelled in ("52:54:00:00:01:02", "52-54-00-00-01-02", "52:54:00:00:01:02".upper()):
        assert host_for_node(None, (), claims, spelled) == "b"
    assert host_for_node(None, (), claims, "52:54:00:00:09:09") is None
    # The providerID wins over the MAC; another provider's node is never a host.
    assert host_for_node("baremetal://a", (), claims, "52:54:00:00:01:02") == "a"
    assert host_for_node("aws:///z/i-1", (), claims, "52:54:00:00:01:02") is None


def test_a_mac_beats_an_ip_and_an_ip_that_contradicts_the_mac_matches_nothing() -> None:
    claims = {
        "a": _claim("a", ip="10.1.0.11", mac="52:54:00:00:01:01"),
        "b": _claim("b", ip="10.1.0.12", mac="52:54:00:00:01:02"),
        "c": _claim("c", ip="10.1.0.13"),
    }
    # a DHCP lease moved 10.1.0.11 to b's NIC: the MAC says b.
    assert host_for_node(None, ("10.1.0.11",), claims, "52:54:00:00:01:02") == "b"
    # A MAC no claim has, on a's IP: a's MAC is known and differs, so not a.
    assert host_for_node(None, ("10.1.0.11",), claims, "52:54:00:00:09:09") is None
    # c's MAC is not in the inventory: its IP still matches.
    assert host_for_node(None, ("10.1.0.13",), claims, "52:54:00:00:09:09") == "c"
    assert host_for_node(None, ("10.1.0.11",), claims) == "a"


def test_a_mac_or_ip_that_fits_two_claimed_hosts_is_refused_and_says_which() -> None:
    # Two groups' inventories can list one MAC (each template alone cannot).
    claims = {
        "a": _claim("a", ip="10.1.0.11", mac="52:54:00:00:01:01"),
        "b": _claim("b", "rack-2", ip="10.1.0.11", mac="52:54:00:00:01:01".upper()),
    }
    found = match_node(None, (), claims, "52:54:00:00:01:01")
    assert found == NodeMatch(None, ("a", "b"))
    assert host_for_node(None, (), claims, "52:54:00:00:01:01") is None
    # Nor is an IP two claims share taken for either.
    assert match_node(None, ("10.1.0.11",), claims) == NodeMatch(None, ("a", "b"))
    assert match_node(None, ("10.9.9.9",), claims) == NodeMatch(None)


def test_only_launching_and_running_claims_are_instances_of_their_cell() -> None:
    claims = {
        "a": _claim("a", state="running"),
        "b": _claim("b", state="launching"),
        "c": _claim("c", state="wiping"),
        "d": _claim("d", state="terminating"),
        "e": _claim("e", "rack-2", state="wipe-failed"),
    }
    cells = live_in(claims, "g")
    assert {cell.zone: [c.host for c in found] for cell, found in cells.items()} == {
        "rack-1": ["a", "b"]
    }
    assert live_in(claims, "other") == {}


def test_claiming_takes_free_hosts_of_the_rack_and_no_more_than_there_are() -> None:
    template = Template.model_validate(
        _template(hosts=[_host("a", "rack-1"), _host("b", "rack-1"), _host("c", "rack-2")])
    )
    assert template.baremetal is not None
    hosts = template.baremetal.hosts
    cell = CellRef("g", "rev1", "rack-1", "on-demand")
    current: dict[str, Claim] = {"a": _claim("a", state="running")}
    taken = claim_hosts(current, hosts, cell, template, 2, NOW)
    assert [c.host for c in taken] == ["b"]  # a is claimed, c is in another rack
    assert current["b"].state == "launching"
    assert current["b"].cell == cell
    assert claim_hosts(current, hosts, cell, template, 1, NOW) == []


def test_a_release_drops_only_the_claim_it_names_in_the_states_it_names() -> None:
    claim = _claim("a")
    newer = _claim("a").moved("launching", claimed_at=NOW.replace(hour=13))
    current = {"a": newer}
    assert not release(current, claim)  # the host was claimed again since: left alone
    assert "a" in current
    current = {"a": claim.moved("running")}
    assert not release(current, claim, only_in={"launching"})
    assert release(current, claim)
    assert current == {}


class _Nodes:
    """A CoreV1Api stand-in that lists the Nodes it was given."""

    def __init__(self, *nodes: SimpleNamespace) -> None:
        self.nodes = nodes

    async def list_node(self) -> SimpleNamespace:
        return SimpleNamespace(items=list(self.nodes))


def _node(name: str, mac: str | None = None, pid: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, labels={MAC_KEY: mac} if mac else {}, annotations={}),
        spec=SimpleNamespace(provider_id=pid),
        status=SimpleNamespace(addresses=[]),
    )


async def test_the_provider_finds_a_hosts_node_by_its_mac_and_refuses_a_shared_one() -> None:
    provider = BareMetalProvider(ApiClient())
    claims = {
        "a": _claim("a", mac="52:54:00:00:01:01"),
        "b": _claim("b", mac="52:54:00:00:01:02"),
        "c": _claim("c", "rack-2", mac="52:54:00:00:01:02"),  # b's MAC, from another group
    }
    provider.core = _Nodes(  # type: ignore[assignment]
        _node("node-a", "52-54-00-00-01-01"),
        _node("node-bc", "52-54-00-00-01-02"),
        _node("elsewhere", "52-54-00-00-01-01", pid="aws:///z/i-1"),
    )
    assert await provider._node_names(list(claims.values())) == {"a": "node-a"}
    assert provider._ambiguous == {"node-bc": ("b", "c")}

    async def stored() -> dict[str, Claim]:
        return claims

    provider.store = SimpleNamespace(load=stored)  # type: ignore[assignment]
    await provider._load()
    by_label = NodeView("node-a", NOW, labels={MAC_KEY: "52-54-00-00-01-01"})
    by_annotation = NodeView("node-a", NOW, annotations={MAC_KEY: "52:54:00:00:01:01"})
    shared = NodeView("node-bc", NOW, labels={MAC_KEY: "52-54-00-00-01-02"})
    assert provider.owns(by_label)
    assert provider.owns(by_annotation)
    assert not provider.owns(shared)
    with pytest.raises(ProviderError, match="fits hosts b, c; Molt does not guess"):
        await provider.terminate(shared)
