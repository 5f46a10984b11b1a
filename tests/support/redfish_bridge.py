"""A stand-in for an operating system booting on emulated hosts: the kubelet joins when a
host powers on with the OS image inserted, and goes when it powers off.

The Redfish emulator keeps power state and media but runs no machine, so nothing would
ever register a Node. The bridge polls each host's system over Redfish (as any Redfish
client would, through the emulator's HTTP API) and, once per power-on with ``os_image``
in its CD drive, creates a kwok Node named after the host with the providerID
``baremetal://<host>`` and the host's address, and nothing of Molt's (registration adds
Molt's labels). When the host reads Off it deletes that Node. A host powered on with
``wipe_image`` inserted stands for the wipe running: after ``wipe_seconds`` the bridge
powers it off, as the wipe image does when it is done.

    async with RedfishNodeBridge(kube, emulator.url, systems, os_url, wipe_url) as bridge:
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from types import TracebackType
from typing import Any

import requests
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.cloud.kwok_nodes import kwok_node
from tests.support.redfish_emulator import PASSWORD, USERNAME, FakeSystem


class RedfishNodeBridge:
    """Registers and removes kwok Nodes as emulated hosts power on and off."""

    def __init__(
        self,
        api: client.ApiClient,
        url: str,
        systems: list[FakeSystem],
        os_image: str,
        wipe_image: str,
        *,
        interval: float = 0.5,
        wipe_seconds: float = 1.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.url = url
        self.systems = systems
        self.os_image = os_image
        self.wipe_image = wipe_image
        self.interval = interval
        self.wipe_seconds = wipe_seconds
        self.session = requests.Session()
        self.session.auth = (USERNAME, PASSWORD)
        self.joins: Counter[str] = Counter()
        """Host -> how many times its Node joined."""
        self.wipes: Counter[str] = Counter()
        """Host -> how many wipes ran to the end on it."""
        self.errors: list[str] = []
        self._joined: set[str] = set()
        self._wipe_seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedfishNodeBridge:
        self._task = asyncio.create_task(self._run(), name="redfish-bridge")
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.session.close()

    async def _run(self) -> None:
        while True:
            for system in self.systems:
                try:
                    await self._poll(system)
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # keep bridging; the test can read the errors
                    self.errors.append(f"{system.name}: {error!r}")
            await asyncio.sleep(self.interval)

    def read(self, system: FakeSystem) -> tuple[str, str]:
        """The host's power state and the image in its CD drive ('' for none)."""
        base = f"{self.url}/redfish/v1/Systems/{system.system_id}"
        power = self.session.get(base, timeout=5).json().get("PowerState", "")
        cd: dict[str, Any] = self.session.get(f"{base}/VirtualMedia/Cd", timeout=5).json()
        media = str(cd.get("Image") or "") if cd.get("Inserted") else ""
        return str(power), media

    def _power_off(self, system: FakeSystem) -> None:
        self.session.post(
            f"{self.url}/redfish/v1/Systems/{system.system_id}/Actions/ComputerSystem.Reset",
            json={"ResetType": "ForceOff"},
            timeout=5,
        ).raise_for_status()

    async def _poll(self, system: FakeSystem) -> None:
        power, media = await asyncio.to_thread(self.read, system)
        host = system.name
        if power != "On":
            self._wipe_seen.pop(host, None)
            if host in self._joined:
                with contextlib.suppress(ApiException):
                    await self.core.delete_node(host)
                self._joined.discard(host)
            return
        if media == self.wipe_image:
            started = self._wipe_seen.setdefault(host, time.monotonic())
            if time.monotonic() - started >= self.wipe_seconds:
                await asyncio.to_thread(self._power_off, system)
                self.wipes[host] += 1
                self._wipe_seen[host] = float("inf")  # one power-off per wipe
            return
        if media == self.os_image and host not in self._joined:
            manifest = kwok_node(host)
            manifest["spec"]["providerID"] = f"baremetal://{host}"
            try:
                await self.core.create_node(manifest)  # type: ignore[arg-type]
            except ApiException as error:
                if error.status != 409:
                    raise
            self._joined.add(host)
            self.joins[host] += 1
