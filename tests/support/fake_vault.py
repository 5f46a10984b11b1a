"""A fake Vault HA cluster on loopback, for the ``vault`` lifecycle action's tests.

This is a fake, not Vault: no Vault or OpenBao server can be built here. It speaks only
the three endpoints the action uses, with their real shapes: ``GET /v1/sys/seal-status``,
``GET /v1/sys/leader`` and ``PUT /v1/sys/step-down`` (``X-Vault-Token``; 403 with
``{"errors": ["permission denied"]}`` for a wrong token, 204 otherwise).

One aiohttp server holds every member; a member is addressed by the first path segment
(``http://127.0.0.1:PORT/<member>/v1/sys/leader``), as a path-routing proxy in front of
one Vault per node would. Members are ``active``, ``standby`` or ``sealed``. A step-down
makes the active member a standby at once and, after ``takeover_seconds``, promotes the
first other unsealed member (the old one if none), as Vault's HA lock changes hands.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Member:
    name: str
    state: str = "standby"
    """``active``, ``standby`` or ``sealed``."""


@dataclass
class StepDown:
    member: str
    at: float
    """``time.time()`` of the accepted step-down."""


@dataclass
class FakeVault:
    """An HA cluster of members served on one loopback port."""

    token: str
    members: dict[str, Member] = field(default_factory=dict)
    takeover_seconds: float = 0.5
    step_downs: list[StepDown] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Members that answered a step-down with 403."""
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    """(member, method, path) of every request."""
    port: int = 0
    _runner: web.AppRunner | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, name: str, state: str = "standby") -> None:
        self.members[name] = Member(name, state)

    def url(self, member: str = "{node.name}") -> str:
        return f"http://127.0.0.1:{self.port}/{member}"

    @property
    def active(self) -> str | None:
        return next((m.name for m in self.members.values() if m.state == "active"), None)

    def _leader_address(self) -> str:
        active = self.active
        return f"https://{active}.vault.internal:8200" if active else ""

    async def start(self) -> FakeVault:
        app = web.Application()
        app.router.add_get("/{member}/v1/sys/seal-status", self._seal_status)
        app.router.add_get("/{member}/v1/sys/leader", self._leader)
        app.router.add_put("/{member}/v1/sys/step-down", self._step_down)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def _member(self, request: web.Request) -> Member:
        name = request.match_info["member"]
        self.requests.append((name, request.method, request.path))
        member = self.members.get(name)
        if member is None:
            raise web.HTTPBadGateway(text=f"no Vault behind {name}")
        return member

    async def _seal_status(self, request: web.Request) -> web.Response:
        member = self._member(request)
        sealed = member.state == "sealed"
        return web.json_response(
            {"type": "shamir", "initialized": True, "sealed": sealed, "t": 1, "n": 1}
        )

    async def _leader(self, request: web.Request) -> web.Response:
        member = self._member(request)
        if member.state == "sealed":
            return web.json_response({"errors": ["Vault is sealed"]}, status=503)
        return web.json_response(
            {
                "ha_enabled": True,
                "is_self": member.state == "active",
                "leader_address": self._leader_address(),
                "leader_cluster_address": "",
            }
        )

    async def _step_down(self, request: web.Request) -> web.Response:
        member = self._member(request)
        if request.headers.get("X-Vault-Token") != self.token:
            self.refused.append(member.name)
            return web.json_response({"errors": ["permission denied"]}, status=403)
        if member.state == "active":
            member.state = "standby"
            self.step_downs.append(StepDown(member.name, time.time()))
            task = asyncio.create_task(self._take_over(member.name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.Response(status=204)

    async def _take_over(self, previous: str) -> None:
        await asyncio.sleep(self.takeover_seconds)
        if self.active is not None:
            return
        others = [m for m in self.members.values() if m.state == "standby" and m.name != previous]
        heir = others[0] if others else self.members[previous]
        heir.state = "active"
