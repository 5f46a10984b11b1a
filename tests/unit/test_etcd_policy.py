"""The etcd action's pure decisions: which member is a node's, where leadership goes, and
when a member may be removed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from molt.policy.etcd import (
    MemberRow,
    leadership_target,
    member_of_node,
    member_table,
    quorum,
    removal_decision,
    url_host,
)

pytestmark = pytest.mark.unit


def row(name: str, member_id: int, host: str = "127.0.0.1", **fields: object) -> MemberRow:
    base = MemberRow(
        id=member_id,
        name=name,
        peer_urls=(f"http://{host}:2380",),
        client_urls=(f"http://{host}:2379",),
        healthy=True,
        node=name,
        node_ready=True,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def three_plus_replacement() -> list[MemberRow]:
    return [
        row("old-a", 1, node_leaving=True),
        row("old-b", 2),
        row("old-c", 3),
        row("new-a", 4),
    ]


def test_a_member_is_the_nodes_by_name_or_by_peer_url_host() -> None:
    members = [row("m1", 1, "10.0.0.1"), row("node-b", 2, "10.0.0.2")]
    assert member_of_node(members, "node-a", ("10.0.0.1",)) == members[0]
    assert member_of_node(members, "node-b", ("192.0.2.9",)) == members[1]
    assert member_of_node(members, "node-c", ("10.0.0.3",)) is None


def test_the_name_wins_over_an_address_match() -> None:
    members = [row("other", 1, "10.0.0.5"), row("node-a", 2, "10.0.0.9")]
    assert member_of_node(members, "node-a", ("10.0.0.5",)) == members[1]


def test_url_hosts_of_every_form() -> None:
    assert url_host("https://10.0.0.1:2380") == "10.0.0.1"
    assert url_host("http://[fd00::1]:2380") == "fd00::1"
    assert url_host("http://Etcd-A.example") == "etcd-a.example"


def test_quorum() -> None:
    assert [quorum(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]


def test_leadership_goes_to_a_healthy_member_on_a_node_that_stays_most_caught_up() -> None:
    members = [
        row("old-a", 1, leader=True, node_leaving=True, raft_index=90),
        row("old-b", 2, raft_index=80, node_leaving=True),
        row("old-c", 3, raft_index=70),
        row("new-a", 4, raft_index=75),
        row("down", 5, healthy=False, raft_index=99),
    ]
    target = leadership_target(members, 1)
    assert target is not None
    assert target.name == "new-a"


def test_leadership_prefers_the_youngest_staying_node() -> None:
    members = [
        row("old-a", 1, leader=True, node_leaving=True),
        row("old-b", 2, raft_index=90, node_created="2026-01-01T00:00:00Z"),
        row("new-a", 3, raft_index=80, node_created="2026-03-01T00:00:00Z"),
    ]
    target = leadership_target(members, 1)
    assert target is not None
    assert target.name == "new-a"


def test_no_leadership_target_when_every_other_member_is_down() -> None:
    members = [row("a", 1, leader=True), row("b", 2, healthy=False)]
    assert leadership_target(members, 1) is None


def test_removal_is_allowed_once_the_replacement_member_is_healthy() -> None:
    assert removal_decision(three_plus_replacement(), 1, keep=3).allowed


def test_removal_waits_for_the_replacement_member_to_join() -> None:
    members = three_plus_replacement()[:3]
    decision = removal_decision(members, 1, keep=3)
    assert not decision.allowed
    assert "2 healthy member(s) on Ready nodes that stay would remain, 3 needed" in decision.reason


def test_removal_waits_for_the_replacement_member_to_be_healthy() -> None:
    members = three_plus_replacement()
    members[3] = replace(members[3], healthy=False, error="connection refused")
    decision = removal_decision(members, 1, keep=3)
    assert not decision.allowed
    assert "new-a unhealthy" in decision.reason


def test_removal_is_refused_while_any_other_member_is_unhealthy() -> None:
    members = [*three_plus_replacement(), row("extra", 5, healthy=False)]
    decision = removal_decision(members, 1, keep=3)
    assert not decision.allowed
    assert "extra unhealthy" in decision.reason


def test_a_member_on_a_leaving_node_does_not_count_as_staying() -> None:
    members = three_plus_replacement()
    members[1] = replace(members[1], node_leaving=True)
    assert not removal_decision(members, 1, keep=3).allowed


def test_removal_never_breaks_quorum_even_with_keep_satisfied() -> None:
    # Two voters would remain, one of them a learner that does not vote.
    members = [row("a", 1), row("b", 2), row("c", 3, learner=True)]
    decision = removal_decision(members, 1, keep=1)
    assert decision.allowed  # b alone is a quorum of the one voter left
    assert not removal_decision([row("a", 1)], 1, keep=0).allowed


def test_removal_waits_while_the_member_still_leads() -> None:
    members = three_plus_replacement()
    members[0] = replace(members[0], leader=True)
    decision = removal_decision(members, 1, keep=3)
    assert not decision.allowed
    assert "leads" in decision.reason


def test_the_member_table_names_each_member_its_health_and_node() -> None:
    members = [row("a", 10, leader=True), row("b", 11, healthy=False, error="timeout", node="")]
    table = member_table(members)
    assert table.splitlines() == [
        "a a http://127.0.0.1:2380 healthy leader; node a Ready",
        "b b http://127.0.0.1:2380 unhealthy (timeout); node no node",
    ]
