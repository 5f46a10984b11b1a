"""A small etcd v3 client over gRPC, for the etcd action: member list and removal,
status, leadership transfer and snapshots, with optional TLS client certificates.

It speaks through the generated etcd v3 stubs that ``aetcd`` ships (``aetcd.rpc``) on
channels opened here: ``aetcd.Client`` itself opens plaintext channels only, has no
MoveLeader call, and drops the answering member's ID from its status, all three of
which this action needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from aetcd import rpc

CALL_SECONDS = 5.0
"""The bound on one RPC that changes or lists the cluster."""
STATUS_SECONDS = 1.0
"""The bound on a member's status: one slower than this counts as unhealthy (a member
still starting can hold a connection open without answering), and the action, which
waits for every member's answer, moves leadership no later than this."""


class EtcdError(Exception):
    """An etcd call failed; the message names the endpoint and the gRPC status."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM bytes for a TLS channel: the CA, and the client certificate and key if any."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None


@dataclass(frozen=True)
class Member:
    """One member as the member list shows it."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool


@dataclass(frozen=True)
class Status:
    """What a member says of itself."""

    member_id: int
    leader: int
    raft_index: int
    errors: tuple[str, ...]
    learner: bool


def grpc_target(url: str) -> tuple[str, bool]:
    """``host:port`` of a client URL, and whether it is https."""
    scheme, _, rest = url.partition("://")
    if not rest:
        scheme, rest = "http", url
    authority = rest.split("/", 1)[0]
    if ":" not in authority.rsplit("]", 1)[-1]:
        authority += ":2379"
    return authority, scheme.lower() == "https"


class Endpoint:
    """A channel to one client URL; use as an async context manager."""

    def __init__(self, url: str, tls: TlsFiles | None = None) -> None:
        self.url = url
        target, secure = grpc_target(url)
        options = [("grpc.enable_retries", 0), ("grpc.max_receive_message_length", 1 << 30)]
        if secure:
            creds = grpc.ssl_channel_credentials(
                root_certificates=tls.ca if tls else None,
                private_key=tls.key if tls else None,
                certificate_chain=tls.cert if tls else None,
            )
            self.channel = rpc.secure_channel(target, creds, options=options)
        else:
            self.channel = rpc.insecure_channel(target, options=options)
        self.cluster = rpc.ClusterStub(self.channel)
        self.maintenance = rpc.MaintenanceStub(self.channel)

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.channel.close()

    async def _call(
        self, what: str, method: Any, request: Any, seconds: float = CALL_SECONDS
    ) -> Any:
        try:
            return await method(request, timeout=seconds)
        except grpc.aio.AioRpcError as error:
            raise EtcdError(
                f"{what} at {self.url}: {error.code().name}: {error.details()}"
            ) from None

    async def members(self) -> list[Member]:
        answer = await self._call(
            "member list", self.cluster.MemberList, rpc.MemberListRequest(linearizable=True)
        )
        return [
            Member(
                m.ID,
                m.name,
                tuple(m.peerURLs),
                tuple(m.clientURLs),
                bool(m.isLearner),
            )
            for m in answer.members
        ]

    async def status(self) -> Status:
        answer = await self._call(
            "status", self.maintenance.Status, rpc.StatusRequest(), STATUS_SECONDS
        )
        return Status(
            answer.header.member_id,
            answer.leader,
            answer.raftIndex,
            tuple(answer.errors),
            bool(answer.isLearner),
        )

    async def move_leader(self, target_id: int) -> None:
        """Hand leadership to ``target_id``; must be sent to the current leader."""
        await self._call(
            "move leader", self.maintenance.MoveLeader, rpc.MoveLeaderRequest(targetID=target_id)
        )

    async def remove_member(self, member_id: int) -> None:
        await self._call(
            "member remove", self.cluster.MemberRemove, rpc.MemberRemoveRequest(ID=member_id)
        )

    async def snapshot(self, path: Path, *, seconds: float) -> int:
        """Stream the member's database into ``path`` (written whole or not at all);
        the byte count."""
        partial = path.with_name(path.name + ".part")
        size = 0
        try:
            with partial.open("wb") as out:
                stream = self.maintenance.Snapshot(rpc.SnapshotRequest(), timeout=seconds)
                async for chunk in stream:
                    out.write(chunk.blob)
                    size += len(chunk.blob)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(path)
        except grpc.aio.AioRpcError as error:
            raise EtcdError(
                f"snapshot at {self.url}: {error.code().name}: {error.details()}"
            ) from None
        finally:
            partial.unlink(missing_ok=True)
        return size
