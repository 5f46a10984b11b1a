"""The etcd action against a real 3-member etcd cluster on loopback, its members standing
for the kwok nodes of one group (member name = node name).

The group is an ordinary kwok group whose nodes host the members (the control-plane
pacing, ``includeControlPlane`` with its bake, has its own test). A bridge
(tests/support/etcd_bridge.py) plays the bootstrap of each replacement machine: it adds a
member for each new Node and starts it as ``existing``, and stops a node's member when its
Node is deleted. A writer puts a key every 100 ms and a poller asks every member for its
status every 50 ms, both throughout, so the "never" assertions below are over that whole
record.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from molt.sandbox.binaries import locate
from tests.support.controller import MoltProcess
from tests.support.etcd_bridge import (
    EtcdCluster,
    Observer,
    healthy_members,
    member_list,
    run_bridge,
)
from tests.support.kube_fleet import install_old_fleet, install_policy, node_annotation, ready_nodes
from tests.support.waiting import eventually

ELECTION_SLACK = 2.0
"""A failed write counts as during an election when it is this close to a leader change."""


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as found:
        yield found


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    binary = locate()["etcd"]
    if binary is None:
        pytest.skip("no etcd binary (make binaries)")
    cluster = EtcdCluster(binary, tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@contextlib.asynccontextmanager
async def running(*coroutines: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run background tasks for the block; always cancelled after it."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        ended = await asyncio.gather(*tasks, return_exceptions=True)
        crashed = [e for e in ended if not isinstance(e, asyncio.CancelledError | type(None))]
        assert not crashed, f"a background task crashed: {crashed!r}"


def etcd_action(cluster: EtcdCluster, snapshot: Path | None = None) -> dict[str, object]:
    etcd: dict[str, object] = {"endpoints": [m.client_url for m in cluster.running()]}
    if snapshot is not None:
        etcd["snapshot"] = {"dir": str(snapshot)}
    return {"name": "etcd", "timeout": "60s", "etcd": etcd}


async def start_cluster(
    kube: client.ApiClient, session: aiohttp.ClientSession, cluster: EtcdCluster, group: str
) -> list[str]:
    old = await install_old_fleet(kube, group, nodes=3, age=timedelta(hours=60), surge=1)
    cluster.start_new(old)
    await eventually(
        lambda: _has_healthy(session, cluster, 3), within=30, what="3 healthy etcd members"
    )
    return old


async def _has_healthy(session: aiohttp.ClientSession, cluster: EtcdCluster, count: int) -> bool:
    return await healthy_members(session, cluster) == count


async def test_rotating_every_etcd_node_keeps_quorum_and_moves_leadership_first(
    kube: client.ApiClient,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
    etcd_cluster: EtcdCluster,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    group = f"etcd-{uuid.uuid4().hex[:5]}"
    old = await start_cluster(kube, session, etcd_cluster, group)
    snapshots = tmp_path / "snapshots"
    await install_policy(
        kube,
        f"{group}-48h",
        group,
        rules={"maxAge": "48h"},
        lifecycle={"preTerminate": [etcd_action(etcd_cluster, snapshots)]},
    )
    observer = Observer(etcd_cluster, session)
    deleted: dict[str, float] = {}
    terminating: dict[str, float] = {}
    started = time.monotonic()
    async with running(
        run_bridge(kube, group, etcd_cluster, session, deleted, terminating),
        observer.write_forever(),
        observer.poll_forever(),
    ):
        await asyncio.sleep(1.0)  # a baseline of writes and leaders before Molt starts
        molt = run_molt()

        async def rotated() -> bool:
            nodes = await ready_nodes(kube, group)
            return (
                len(nodes) == 3
                and not set(nodes) & set(old)
                and await healthy_members(session, etcd_cluster) == 3
                and {m.get("name") for m in await member_list(session, etcd_cluster)} == set(nodes)
            )

        await eventually(rotated, within=240, interval=1.0, what="three new etcd nodes")
        await asyncio.sleep(1.0)
    elapsed = time.monotonic() - started
    assert molt.alive(), molt.log()

    # The cluster ends with 3 healthy members, one on each new node.
    new = set(await ready_nodes(kube, group))
    names = {m.get("name") for m in await member_list(session, etcd_cluster)}
    assert names == new, (names, new)
    assert await healthy_members(session, etcd_cluster) == 3

    samples = [s for s in observer.samples if s.members]
    assert len(samples) > elapsed * 5, "the poller kept up (a sample every ~50-100 ms)"

    # Quorum is never lost: in every sample, a quorum of the listed members answered.
    for sample in samples:
        answering = [n for n in sample.leaders if n in sample.members.values()]
        assert len(answering) >= len(sample.members) // 2 + 1, sample

    # Leadership had left each old member before its node turned terminating (the
    # preTerminate action moves it; the label follows), and never came back to it (nor
    # was it ever on a member whose Node was gone).
    changes = observer.leader_changes()
    leads: dict[str, float] = {}
    for node in old:
        assert node in terminating, (node, terminating)
        assert node in deleted, (node, deleted)
        led = [s.at for s in samples if observer.leader_at(s) == node]
        late = [at for at in led if at >= terminating[node]]
        assert not late, (node, "led after its node turned terminating", late[:3])
        if led:
            leads[node] = terminating[node] - max(led)
    # The only elections are the moves Molt made (at most one per rotated member).
    assert len(changes) - 1 <= len(old), changes
    for sample in samples:
        leader = observer.leader_at(sample)
        assert not (leader in deleted and sample.at >= deleted[leader]), (leader, sample)

    # Every removal came after the replacement's member was healthy: at the k-th removal,
    # k new members had answered with a leader and were still listed.
    removals = observer.removals()
    assert sorted(name for _, name in removals) == sorted(old), removals
    for k, (at, name) in enumerate(sorted(removals), start=1):
        healthy_new = {
            n
            for s in samples
            if s.at < at
            for n, leader in s.leaders.items()
            if leader and n not in old
        }
        listed = set(next(s for s in samples if s.at >= at).members.values())
        assert len(healthy_new & listed) >= k, (name, k, healthy_new, listed)
        assert at < deleted[name], "removed before its machine went"

    # Writes failed only around the elections Molt caused, at most one per rotated member.
    failed = observer.failed_writes
    assert len(failed) <= len(old), failed
    for at in failed:
        assert any(abs(at - when) <= ELECTION_SLACK for when, _ in changes), (at, changes)
    assert observer.writes > elapsed * 5

    # A snapshot was saved before each removal.
    saved = sorted(p.name for p in snapshots.glob("*.db"))
    assert {name.rsplit("-", 1)[0] for name in saved} == set(old), saved
    assert all(p.stat().st_size > 0 for p in snapshots.glob("*.db"))
    print(
        f"\nrotation {elapsed:.0f}s; writes {observer.writes}, failed {len(failed)}; "
        f"leader changes {len(changes) - 1}: {[n for _, n in changes]}; "
        f"last led before terminating {', '.join(f'{n}={w:.2f}s' for n, w in leads.items())}"
    )


async def test_a_rotation_with_another_member_down_is_held_with_the_member_table(
    kube: client.ApiClient,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
    etcd_cluster: EtcdCluster,
    session: aiohttp.ClientSession,
) -> None:
    group = f"etcdheld-{uuid.uuid4().hex[:5]}"
    old = await start_cluster(kube, session, etcd_cluster, group)
    down = old[2]
    await install_policy(
        kube,
        f"{group}-48h",
        group,
        rules={"maxAge": "48h"},
        lifecycle={"preTerminate": [etcd_action(etcd_cluster)]},
    )
    etcd_cluster.stop_member(down)
    deleted: dict[str, float] = {}
    terminating: dict[str, float] = {}
    async with running(run_bridge(kube, group, etcd_cluster, session, deleted, terminating)):
        molt = run_molt()

        async def held() -> str:
            for node in old:
                text = await node_annotation(kube, node, "molt.dev/blocked") or ""
                if "preTerminate action etcd held" in text:
                    return text
            return ""

        message = await eventually(held, within=120, interval=0.5, what="a held etcd action")
        await asyncio.sleep(5)  # held, and still held a few retries later
        assert await held()
    assert "not removed" in message, message
    table = message.split("\n")[1:]
    assert len(table) >= 3, message
    assert any(line.startswith(f"{down} ") and "unhealthy" in line for line in table), message
    assert all(any(line.startswith(f"{n} ") for line in table) for n in old), message
    names = {m.get("name") for m in await member_list(session, etcd_cluster)}
    assert set(old) <= names, "no member was removed"
    assert not deleted, "no node went"
    assert molt.alive(), molt.log()
    print(f"\nheld: {message}")
