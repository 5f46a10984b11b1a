"""The etcd action's table building: members, their statuses and the Nodes they map to."""

from __future__ import annotations

from typing import Any

import pytest

from molt.actions.etcd import build_table, node_facts
from molt.actions.etcd_client import Member, Status, grpc_target

pytestmark = pytest.mark.unit


def node(name: str, address: str, *, ready: bool = True, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **meta},
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def member(member_id: int, name: str, host: str) -> Member:
    return Member(member_id, name, (f"https://{host}:2380",), (f"https://{host}:2379",), False)


def test_grpc_targets_of_client_urls() -> None:
    assert grpc_target("https://10.0.0.1:2379") == ("10.0.0.1:2379", True)
    assert grpc_target("http://127.0.0.1:1234/") == ("127.0.0.1:1234", False)
    assert grpc_target("https://etcd.example") == ("etcd.example:2379", True)
    assert grpc_target("http://[::1]:2379") == ("[::1]:2379", False)


def test_a_node_is_leaving_once_in_the_pipeline_cordoned_or_deleted() -> None:
    assert node_facts(node("a", "10.0.0.1"))[3] is False
    assert node_facts(node("a", "10.0.0.1", labels={"molt.dev/state": "terminating"}))[3]
    assert node_facts(node("a", "10.0.0.1", deletionTimestamp="2026-01-01T00:00:00Z"))[3]
    assert node_facts(node("a", "10.0.0.1", ready=False))[2] is False


def test_the_table_maps_members_by_name_or_address_and_takes_the_reported_leader() -> None:
    members = [member(1, "cp-a", "10.0.0.1"), member(2, "etcd-2", "10.0.0.2"), member(3, "", "x")]
    statuses: dict[int, Status | str] = {
        1: Status(1, 2, 100, (), False),
        2: Status(2, 2, 101, (), False),
        3: "not started",
    }
    nodes = [
        node("cp-a", "10.0.0.1", labels={"molt.dev/state": "terminating"}),
        node("cp-b", "10.0.0.2"),
    ]
    table = {row.id: row for row in build_table(members, statuses, nodes)}
    assert (table[1].node, table[1].node_leaving, table[1].leader) == ("cp-a", True, False)
    assert (table[2].node, table[2].node_leaving, table[2].leader) == ("cp-b", False, True)
    assert table[3].healthy is False
    assert table[3].error == "not started"
    assert table[3].node == ""


def test_a_member_with_alarms_or_no_leader_is_unhealthy() -> None:
    members = [member(1, "a", "10.0.0.1"), member(2, "b", "10.0.0.2")]
    statuses: dict[int, Status | str] = {
        1: Status(1, 0, 5, (), False),
        2: Status(2, 1, 5, ("NOSPACE",), False),
    }
    table = {row.id: row for row in build_table(members, statuses, [])}
    assert (table[1].healthy, table[1].error) == (False, "no leader")
    assert (table[2].healthy, table[2].error) == (False, "NOSPACE")
