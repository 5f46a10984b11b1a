"""A real etcd cluster on loopback whose members stand for kwok nodes, and what watches it.

``EtcdCluster`` starts one member per node (member name = node name, every member on
127.0.0.1 with its own ports) and stops every process it started in ``stop``. The bridge
(``run_bridge``) plays the machines' bootstrap: for each new Node of the group it adds a
member and starts it with ``--initial-cluster-state existing``; when a Node is deleted
(the machine going away) it stops that node's process. ``Observer`` watches throughout:
a writer puts a key every 100 ms (failing over across the running members, as a client
does, a write failing only when no member took it within a second), and a poller asks
every running member for its status and the member list every 50 ms.

Everything speaks the JSON gateway on the members' client URLs (loopback only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from molt.kube.transport import RawApi
from molt.kube.watch import Reflector

GROUP_LABEL = "molt.dev/instance-group"
CALL_SECONDS = 1.0
POLL_CALL_SECONDS = 0.3
"""The poller's bound on one status: a member still starting must not stretch a sample."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class MemberProcess:
    name: str
    client_url: str
    peer_url: str
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


async def gateway(
    session: aiohttp.ClientSession,
    url: str,
    path: str,
    body: dict[str, Any] | None = None,
    seconds: float = CALL_SECONDS,
) -> dict[str, Any]:
    """POST to the member's JSON gateway; raises on anything but a 200 with an object."""
    async with session.post(
        f"{url}/v3/{path}", json=body or {}, timeout=aiohttp.ClientTimeout(total=seconds)
    ) as response:
        found = await response.json(content_type=None)
        if response.status != 200 or not isinstance(found, dict) or "error" in found:
            raise RuntimeError(f"{path} at {url}: {response.status} {found}")
        return found


class EtcdCluster:
    """The members this test started; ``stop`` ends every one of them."""

    def __init__(self, binary: Path, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.members: dict[str, MemberProcess] = {}
        self.log = root / "etcd.log"

    def _start(self, name: str, client_url: str, peer_url: str, initial: str, state: str) -> None:
        data = self.root / f"{name}.etcd"
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(self.binary),
                    f"--name={name}",
                    f"--data-dir={data}",
                    f"--listen-client-urls={client_url}",
                    f"--advertise-client-urls={client_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster={initial}",
                    f"--initial-cluster-state={state}",
                    "--initial-cluster-token=molt-test",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.members[name] = MemberProcess(name, client_url, peer_url, process)

    def start_new(self, names: list[str]) -> None:
        """A fresh cluster, one member per name."""
        urls = {
            n: (f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}") for n in names
        }
        initial = ",".join(f"{n}={peer}" for n, (_, peer) in urls.items())
        for name, (client_url, peer_url) in urls.items():
            self._start(name, client_url, peer_url, initial, "new")

    def running(self) -> list[MemberProcess]:
        return [m for m in self.members.values() if m.process.poll() is None]

    async def join(self, session: aiohttp.ClientSession, name: str, within: float = 60) -> None:
        """Add a member for ``name`` through any running member (retried: the strict
        reconfiguration check refuses an add until the members have been up a while),
        then start it as ``existing``."""
        client_url, peer_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        deadline = time.monotonic() + within
        while True:
            try:
                added = await self._add(session, peer_url)
                break
            except (RuntimeError, aiohttp.ClientError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        initial = ",".join(f"{m.get('name') or name}={m['peerURLs'][0]}" for m in added["members"])
        self._start(name, client_url, peer_url, initial, "existing")

    async def _add(self, session: aiohttp.ClientSession, peer_url: str) -> dict[str, Any]:
        last: Exception | None = None
        for member in self.running():
            try:
                return await gateway(
                    session, member.client_url, "cluster/member/add", {"peerURLs": [peer_url]}
                )
            except (RuntimeError, aiohttp.ClientError, TimeoutError) as error:
                last = error
        raise RuntimeError(f"no member added {peer_url}: {last}")

    def stop_member(self, name: str) -> None:
        member = self.members.get(name)
        if member is not None and member.process.poll() is None:
            member.process.terminate()
            try:
                member.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                member.process.kill()
                member.process.wait()

    def stop(self) -> None:
        for name in list(self.members):
            self.stop_member(name)


async def member_list(
    session: aiohttp.ClientSession, cluster: EtcdCluster, seconds: float = CALL_SECONDS
) -> list[dict[str, Any]]:
    for member in cluster.running():
        with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
            found = await gateway(
                session, member.client_url, "cluster/member/list", seconds=seconds
            )
            return list(found["members"])
    return []


async def healthy_members(session: aiohttp.ClientSession, cluster: EtcdCluster) -> int:
    """Members in the list that answer a status with a leader."""
    count = 0
    for member in await member_list(session, cluster):
        for url in member.get("clientURLs") or []:
            with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
                status = await gateway(session, url, "maintenance/status")
                count += bool(status.get("leader"))
    return count


async def run_bridge(
    kube: client.ApiClient,
    group: str,
    cluster: EtcdCluster,
    session: aiohttp.ClientSession,
    deleted: dict[str, float],
    terminating: dict[str, float],
) -> None:
    """Start a member for each new Node of ``group``; stop a deleted Node's member. Notes
    when each Node was first seen in Molt's ``terminating`` state and when it was gone."""
    core = client.CoreV1Api(kube)
    seen = set(cluster.members)
    joining: dict[str, asyncio.Task[None]] = {}

    def note(key: str, old: Any, new: Any) -> None:
        if new == "terminating":
            terminating.setdefault(key, time.monotonic())

    # A watch, not the poll below: a node is terminating only while Molt terminates it
    # (milliseconds in kwok), which a LIST every 100 ms can miss.
    states = Reflector(
        RawApi(kube),
        "/api/v1/nodes",
        lambda obj: (obj["metadata"].get("labels") or {}).get("molt.dev/state"),
        name="etcd-bridge-states",
        label_selector=f"{GROUP_LABEL}={group}",
        on_change=note,
    )
    watching = asyncio.create_task(states.run())
    await states.synced.wait()
    try:
        while True:
            nodes = await core.list_node(label_selector=f"{GROUP_LABEL}={group}")
            names = {n.metadata.name for n in nodes.items}
            for name, task in list(joining.items()):
                if task.done():
                    del joining[name]
                    if task.exception() is None:
                        seen.add(name)
            # Joins run beside this loop, so a slow one never delays what it notes.
            for name in sorted(names - seen - set(joining)):
                joining[name] = asyncio.create_task(cluster.join(session, name, within=5))
            for name in sorted(seen - names):
                if name not in deleted:
                    deleted[name] = time.monotonic()
                    cluster.stop_member(name)
            await asyncio.sleep(0.1)
    finally:
        watching.cancel()
        for task in joining.values():
            task.cancel()
        await asyncio.gather(watching, *joining.values(), return_exceptions=True)


@dataclass
class Sample:
    """One poll: when, who each running member says leads, which members answered, and
    the member list (name by ID)."""

    at: float
    leaders: dict[str, str]
    """Answering member name -> leader member name ("" when it knows none)."""
    members: dict[str, str]
    """Member ID -> name ("" for a member added but not started)."""


@dataclass
class Observer:
    """What the writer and the poller saw, with monotonic timestamps."""

    cluster: EtcdCluster
    session: aiohttp.ClientSession
    writes: int = 0
    failed_writes: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)

    async def write_forever(self) -> None:
        n = 0
        while True:
            n += 1
            tick = time.monotonic()
            body = {
                "key": base64.b64encode(b"molt-test/tick").decode(),
                "value": base64.b64encode(str(n).encode()).decode(),
            }
            done = False
            while not done and time.monotonic() - tick < CALL_SECONDS:
                for member in self.cluster.running():
                    with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
                        await gateway(self.session, member.client_url, "kv/put", body)
                        done = True
                        break
                    if time.monotonic() - tick >= CALL_SECONDS:
                        break
                if not done:
                    await asyncio.sleep(0.05)
            self.writes += 1
            if not done:
                self.failed_writes.append(tick)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))

    async def poll_forever(self) -> None:
        while True:
            tick = time.monotonic()
            members = {
                str(m["ID"]): str(m.get("name") or "")
                for m in await member_list(self.session, self.cluster, POLL_CALL_SECONDS)
            }
            answers = await asyncio.gather(
                *(self._leader_of(m, members) for m in self.cluster.running())
            )
            leaders = {name: leader for name, leader in answers if leader is not None}
            self.samples.append(Sample(tick, leaders, members))
            await asyncio.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))

    async def _leader_of(
        self, member: MemberProcess, members: dict[str, str]
    ) -> tuple[str, str | None]:
        """The member's name and who it says leads ("" none, None: no answer)."""
        try:
            status = await gateway(
                self.session, member.client_url, "maintenance/status", seconds=POLL_CALL_SECONDS
            )
        except (RuntimeError, aiohttp.ClientError, TimeoutError):
            return member.name, None
        leader = str(status.get("leader") or "")
        return member.name, (members.get(leader, f"id:{leader}") if leader else "")

    def leader_at(self, sample: Sample) -> str:
        """The leader a majority of the membership reports, else ""."""
        votes: dict[str, int] = {}
        for leader in sample.leaders.values():
            if leader:
                votes[leader] = votes.get(leader, 0) + 1
        need = len(sample.members) // 2 + 1
        return next((name for name, count in votes.items() if count >= need), "")

    def leader_changes(self) -> list[tuple[float, str]]:
        """(when, new leader) each time the majority-reported leader changed."""
        changes: list[tuple[float, str]] = []
        for sample in self.samples:
            leader = self.leader_at(sample)
            if leader and (not changes or changes[-1][1] != leader):
                changes.append((sample.at, leader))
        return changes

    def removals(self) -> list[tuple[float, str]]:
        """(when, name) each time a named member left the member list."""
        found: list[tuple[float, str]] = []
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            if not before.members or not after.members:
                continue
            for member_id, name in before.members.items():
                if member_id not in after.members:
                    found.append((after.at, name))
        return found
