"""The etcd action: move leadership off the node's member, then remove the member once
the cluster can spare it.

One attempt reads the member list through the action's endpoints, asks every member for
its status at its own client URL, and maps members to Nodes (by name, or by a peer URL
host among a Node's addresses). If the node's member leads, leadership moves to the
healthiest other member. The member is removed only when ``policy.etcd.removal_decision``
allows it (every other member healthy, quorum kept, enough healthy members on Ready
nodes that stay); otherwise the attempt answers *held* with the member table, and the
pipeline tries again soon without using a retry. A snapshot is saved first when asked.

TLS material comes from the action's Secret (``ca.crt``, ``tls.crt``, ``tls.key``) at
each attempt and is never logged.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from molt.actions.base import ActionContext, ActionFailedError, ActionHeldError
from molt.actions.etcd_client import Endpoint, EtcdError, Member, Status, TlsFiles
from molt.actions.objects import read_secret_key
from molt.actions.vault import vault_address
from molt.api.durations import parse_duration
from molt.api.labels import STATE_LABEL
from molt.api.lifecycle import EtcdAction, LifecycleAction
from molt.policy.etcd import (
    MemberRow,
    leadership_target,
    maps_to,
    member_of_node,
    member_table,
    removal_decision,
)
from molt.ports import ClusterWrites

log = structlog.get_logger(__name__)

LEADER_SETTLE_SECONDS = 0.2
"""How often the cluster is asked again while a leadership move settles."""


def node_facts(node: dict[str, Any]) -> tuple[str, tuple[str, ...], bool, bool, str]:
    """A Node object's name, addresses, Ready, whether it is leaving (in Molt's pipeline,
    cordoned or being deleted), and its creationTimestamp."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    addresses = tuple(str(a.get("address")) for a in status.get("addresses") or [])
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    leaving = bool(
        (meta.get("labels") or {}).get(STATE_LABEL)
        or (node.get("spec") or {}).get("unschedulable")
        or meta.get("deletionTimestamp")
    )
    created = str(meta.get("creationTimestamp") or "")
    return str(meta.get("name", "")), addresses, ready, leaving, created


def build_table(
    members: list[Member],
    statuses: dict[int, Status | str],
    nodes: list[dict[str, Any]],
) -> list[MemberRow]:
    """The member table: each member's health (its status, or why it gave none), who
    leads (as the healthy members report), and the Node it maps to."""
    answered = [s for s in statuses.values() if isinstance(s, Status) and s.leader]
    leaders = {s.leader for s in answered}
    leader = leaders.pop() if len(leaders) == 1 else 0
    facts = [node_facts(n) for n in nodes]
    rows = []
    for member in members:
        status = statuses.get(member.id, "no client URL")
        healthy = isinstance(status, Status) and bool(status.leader) and not status.errors
        error = ""
        if isinstance(status, str):
            error = status
        elif not status.leader:
            error = "no leader"
        elif status.errors:
            error = "; ".join(status.errors)
        row = MemberRow(
            id=member.id,
            name=member.name,
            peer_urls=member.peer_urls,
            client_urls=member.client_urls,
            learner=member.learner,
            healthy=healthy,
            leader=member.id == leader,
            raft_index=status.raft_index if isinstance(status, Status) else 0,
            error=error,
        )
        for name, addresses, ready, leaving, created in facts:
            if maps_to(row, name, addresses):
                row = replace(
                    row, node=name, node_ready=ready, node_leaving=leaving, node_created=created
                )
                break
        rows.append(row)
    return rows


class EtcdActionKind:
    """Moves leadership off the node's etcd member and removes it, once per attempt."""

    def __init__(self, cluster: ClusterWrites) -> None:
        self.cluster = cluster

    async def attempt(self, action: LifecycleAction, context: ActionContext) -> None:
        assert action.etcd is not None
        spec = action.etcd
        seconds = parse_duration(action.timeout).total_seconds()
        urls = [vault_address(url, context.node) for url in spec.endpoints]
        try:
            async with asyncio.timeout(seconds):
                tls = await self._tls(spec)
                await self._run(spec, context, urls, tls, seconds)
        except TimeoutError:
            raise ActionFailedError(
                f"etcd at {', '.join(urls)}: not done after {action.timeout}"
            ) from None
        except EtcdError as error:
            raise ActionFailedError(str(error)) from None

    async def _tls(self, spec: EtcdAction) -> TlsFiles | None:
        ref = spec.client_secret
        if ref is None:
            return None
        values = {}
        for key in ("ca.crt", "tls.crt", "tls.key"):
            value = await read_secret_key(self.cluster, ref.namespace, ref.name, key)
            values[key] = value.encode() if value else None
        if values["ca.crt"] is None and values["tls.crt"] is None:
            raise ActionFailedError(
                f"secret {ref.namespace}/{ref.name} has neither ca.crt nor tls.crt"
            )
        if (values["tls.crt"] is None) != (values["tls.key"] is None):
            raise ActionFailedError(
                f"secret {ref.namespace}/{ref.name} needs both tls.crt and tls.key"
            )
        return TlsFiles(values["ca.crt"], values["tls.crt"], values["tls.key"])

    async def _run(
        self,
        spec: EtcdAction,
        context: ActionContext,
        urls: list[str],
        tls: TlsFiles | None,
        seconds: float,
    ) -> None:
        node = context.node
        table = await self._table(urls, tls)
        mine = member_of_node(table, node.name, node.addresses)
        if mine is None:
            log.info("etcd.no_member", node=node.name)
            return  # removed already (an earlier attempt), or never a member
        if mine.leader:
            table = await self._move_leadership(table, mine, urls, tls)
            mine = member_of_node(table, node.name, node.addresses) or mine
        keep = spec.members if spec.members is not None else await self._group_size(node.group)
        decision = removal_decision(table, mine.id, keep)
        if not decision.allowed:
            raise ActionHeldError(
                f"etcd member {mine.name or f'{mine.id:x}'} not removed: {decision.reason}\n"
                + member_table(table)
            )
        peer = self._healthy_other(table, mine.id)
        if spec.snapshot is not None:
            await self._snapshot(peer, spec.snapshot.dir, node.name, tls, seconds)
        async with Endpoint(peer.client_urls[0], tls) as endpoint:
            await endpoint.remove_member(mine.id)
        log.info("etcd.member_removed", node=node.name, member=mine.name, id=f"{mine.id:x}")

    async def _table(self, urls: list[str], tls: TlsFiles | None) -> list[MemberRow]:
        """Members from the first endpoint that answers, each member's own status, and
        the Nodes they map to."""
        members: list[Member] | None = None
        errors = []
        for url in urls:
            async with Endpoint(url, tls) as endpoint:
                try:
                    members = await endpoint.members()
                    break
                except EtcdError as error:
                    errors.append(str(error))
        if members is None:
            raise ActionFailedError("no etcd endpoint answered: " + "; ".join(errors))
        statuses = dict(
            zip(
                [m.id for m in members],
                await asyncio.gather(*(self._status(m, tls) for m in members)),
                strict=True,
            )
        )
        nodes = await self.cluster.list_objects("v1", "Node", None)
        return build_table(members, statuses, nodes)

    async def _status(self, member: Member, tls: TlsFiles | None) -> Status | str:
        if not member.client_urls:
            return "not started"
        async with Endpoint(member.client_urls[0], tls) as endpoint:
            try:
                return await endpoint.status()
            except EtcdError as error:
                return str(error)

    async def _move_leadership(
        self, table: list[MemberRow], mine: MemberRow, urls: list[str], tls: TlsFiles | None
    ) -> list[MemberRow]:
        """Hand leadership to the healthiest other member; the table as it is after."""
        target = leadership_target(table, mine.id)
        if target is None:
            raise ActionHeldError(
                f"etcd member {mine.name} leads and no other member is healthy to take over\n"
                + member_table(table)
            )
        async with Endpoint(mine.client_urls[0], tls) as endpoint:
            await endpoint.move_leader(target.id)
        log.info("etcd.leader_moved", member=mine.name, to=target.name)
        while True:
            table = await self._table(urls, tls)
            now = next((m for m in table if m.leader), None)
            if now is not None and now.id != mine.id:
                return table
            await asyncio.sleep(LEADER_SETTLE_SECONDS)

    async def _group_size(self, group: str | None) -> int:
        """The node's InstanceGroup's desired size: how many members must remain."""
        if group is None:
            raise ActionFailedError(
                "the node belongs to no instance group: set etcd.members to say how many "
                "members must remain"
            )
        # A list (which Molt's role grants for its watch), not a get: no extra verb.
        groups = await self.cluster.list_objects("molt.dev/v1alpha1", "InstanceGroup", None)
        found = next((g for g in groups if (g.get("metadata") or {}).get("name") == group), None)
        if found is None:
            raise ActionFailedError(f"instance group {group} not found")
        spec = found.get("spec") or {}
        size = spec.get("replicas")
        return int(size if size is not None else spec.get("minSize", 1))

    @staticmethod
    def _healthy_other(table: list[MemberRow], mine: int) -> MemberRow:
        """A healthy member other than ``mine`` with a client URL, the leader first."""
        others = [m for m in table if m.id != mine and m.healthy and m.client_urls]
        return sorted(others, key=lambda m: not m.leader)[0]

    async def _snapshot(
        self, member: MemberRow, directory: str, node: str, tls: TlsFiles | None, seconds: float
    ) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = Path(directory) / f"{node}-{stamp}.db"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            async with Endpoint(member.client_urls[0], tls) as endpoint:
                size = await endpoint.snapshot(path, seconds=seconds)
        except OSError as error:
            raise ActionFailedError(f"etcd snapshot into {directory}: {error}") from None
        log.info("etcd.snapshot_saved", node=node, path=str(path), bytes=size)
