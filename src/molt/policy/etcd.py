"""Which etcd member is a node's, and whether the cluster can spare it: pure decisions
for the etcd lifecycle action, over a member table the action gathered."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemberRow:
    """One member as the action saw it: membership, health and the node it maps to."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...] = ()
    learner: bool = False
    healthy: bool = False
    """It answered a status request, reports a leader, and no errors."""
    leader: bool = False
    raft_index: int = 0
    error: str = ""
    node: str = ""
    """The Node this member maps to ("" when none does)."""
    node_ready: bool = False
    node_leaving: bool = False
    """Its Node is in Molt's pipeline, cordoned or being deleted."""
    node_created: str = ""
    """Its Node's creationTimestamp (RFC 3339, UTC), "" when unknown."""


@dataclass(frozen=True)
class Decision:
    """Whether the node's member may be removed now, and why not."""

    allowed: bool
    reason: str = ""


def url_host(url: str) -> str:
    """The host of a URL such as ``https://10.0.0.1:2380`` or ``http://[::1]:2380``."""
    rest = url.split("://", 1)[-1]
    authority = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if authority.startswith("["):
        return authority[1:].split("]", 1)[0].lower()
    return authority.split(":", 1)[0].lower()


def peer_hosts(member: MemberRow) -> set[str]:
    """The hosts of a member's peer URLs."""
    return {url_host(url) for url in member.peer_urls} - {""}


def maps_to(member: MemberRow, node_name: str, addresses: tuple[str, ...]) -> bool:
    """A member is a node's when it bears the node's name or a peer URL host is one of
    the node's addresses."""
    return member.name == node_name or bool(peer_hosts(member) & set(addresses))


def member_of_node(
    members: list[MemberRow], node_name: str, addresses: tuple[str, ...]
) -> MemberRow | None:
    """The node's member: the one named like the node, else the one whose peer URL host
    is one of its addresses; None when the node has no member (already removed)."""
    named = [m for m in members if m.name == node_name]
    if named:
        return named[0]
    by_address = [m for m in members if peer_hosts(m) & set(addresses)]
    return by_address[0] if by_address else None


def quorum(voters: int) -> int:
    """Raft's quorum of ``voters`` voting members."""
    return voters // 2 + 1


def leadership_target(members: list[MemberRow], leaving_id: int) -> MemberRow | None:
    """The member leadership moves to: a healthy voting member other than the leaving
    one, preferring those on Ready nodes that stay, then the youngest node (the last to be
    rotated, so leadership moves once per rotation rather than once per node), then the
    most caught-up."""
    candidates = [m for m in members if m.id != leaving_id and m.healthy and not m.learner]
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda m: (
            bool(m.node) and m.node_ready and not m.node_leaving,
            m.node_created,
            m.raft_index,
        ),
    )


def removal_decision(members: list[MemberRow], target_id: int, keep: int) -> Decision:
    """May ``target_id`` be removed now, with ``keep`` healthy members to remain?

    Never when any other member is unhealthy, when the healthy members left would not
    make a quorum of the voters left, or while fewer than ``keep`` healthy voting members
    on Ready nodes that are not leaving would remain (the replacement's member has not
    joined or is not yet healthy).
    """
    others = [m for m in members if m.id != target_id]
    unhealthy = [m for m in others if not m.healthy]
    if unhealthy:
        names = ", ".join(m.name or f"{m.id:x}" for m in unhealthy)
        return Decision(False, f"member(s) {names} unhealthy")
    voters = [m for m in others if not m.learner]
    if not voters:
        return Decision(False, "it is the last voting member")
    healthy = [m for m in voters if m.healthy]
    if len(healthy) < quorum(len(voters)):
        return Decision(
            False,
            f"{len(healthy)} healthy of {len(voters)} voting members would remain, "
            f"below quorum {quorum(len(voters))}",
        )
    staying = [m for m in healthy if m.node and m.node_ready and not m.node_leaving]
    if len(staying) < keep:
        return Decision(
            False,
            f"{len(staying)} healthy member(s) on Ready nodes that stay would remain, "
            f"{keep} needed (waiting for the replacement's member to join and be healthy)",
        )
    if any(m.leader for m in members if m.id == target_id):
        return Decision(False, "the member still leads")
    return Decision(True)


def member_table(members: list[MemberRow]) -> str:
    """A compact table for ``molt.dev/blocked``: one member a line."""
    lines = []
    for m in sorted(members, key=lambda m: m.name):
        health = "healthy" if m.healthy else f"unhealthy ({m.error or 'no answer'})"
        flags = [f for f, on in (("leader", m.leader), ("learner", m.learner)) if on]
        node = m.node or "no node"
        if m.node:
            node += " Ready" if m.node_ready else " NotReady"
            node += " leaving" if m.node_leaving else ""
        peer = ",".join(m.peer_urls)
        extra = f" {' '.join(flags)}" if flags else ""
        lines.append(f"{m.name or '(unstarted)'} {m.id:x} {peer} {health}{extra}; node {node}")
    return "\n".join(lines)
