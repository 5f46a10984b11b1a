"""One BMC through sushy, OpenStack's Redfish client: power, boot override, virtual media.

sushy is synchronous (requests underneath); the provider calls these methods in worker
threads. Each request is bounded by the host's BMC timeout, and an unreachable BMC is
retried only twice, so a dead BMC fails a launch in seconds rather than minutes. Basic
authentication is used rather than Redfish sessions: a controller that reconnects
would otherwise leave sessions behind, and BMCs allow only a few.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sushy
from sushy import auth as sushy_auth
from sushy.resources.system.system import System

BOOT_TARGETS = {"VirtualMedia": sushy.BOOT_SOURCE_TARGET_CD, "PXE": sushy.BOOT_SOURCE_TARGET_PXE}
CONNECT_RETRIES = 2
CONNECT_RETRY_DELAY = 1


@dataclass(frozen=True)
class Credentials:
    """A BMC login; its password stays out of every repr, so no log or error can show it."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class PowerAndMedia:
    """What a host looks like from its BMC."""

    powered_on: bool
    media: str | None
    """The image inserted in the CD device, if any."""


class Bmc:
    """One ComputerSystem behind one BMC."""

    def __init__(
        self,
        address: str,
        system_id: str,
        credentials: Credentials,
        *,
        timeout: float,
        verify: bool = True,
    ) -> None:
        self.root = sushy.Sushy(
            address,
            auth=sushy_auth.BasicAuth(credentials.username, credentials.password),
            verify=verify,
            read_timeout=max(1, int(timeout)),
            connect_timeout=max(1, int(timeout)),
            server_side_retries=CONNECT_RETRIES,
            server_side_retries_delay=CONNECT_RETRY_DELAY,
        )
        self.credentials = credentials
        self.path = f"/redfish/v1/Systems/{system_id}"

    def _system(self) -> System:
        return self.root.get_system(self.path)

    def _cd(self, system: System) -> Any:
        for media in system.virtual_media.get_members():
            if any(str(t.value) in ("CD", "DVD") for t in media.media_types or ()):
                return media
        raise sushy.exceptions.SushyError(f"{self.path} has no CD/DVD virtual media device")

    def state(self) -> PowerAndMedia:
        system = self._system()
        on = system.power_state in (
            sushy.SYSTEM_POWER_STATE_ON,
            sushy.SYSTEM_POWER_STATE_POWERING_ON,
        )
        try:
            cd = self._cd(system)
            media = cd.image if cd.inserted and cd.image else None
        except sushy.exceptions.SushyError:
            media = None
        return PowerAndMedia(on, media)

    def insert(self, image: str) -> None:
        """Insert ``image`` in the CD device (ejecting another first)."""
        cd = self._cd(self._system())
        if cd.inserted and cd.image == image:
            return
        if cd.inserted:
            cd.eject_media()
        cd.insert_media(image, inserted=True, write_protected=True)

    def eject(self) -> None:
        cd = self._cd(self._system())
        if cd.inserted or cd.image:
            cd.eject_media()

    def boot_once(self, boot: str) -> None:
        self._system().set_system_boot_options(
            BOOT_TARGETS[boot], enabled=sushy.BOOT_SOURCE_ENABLED_ONCE
        )

    def power_on(self) -> None:
        system = self._system()
        if system.power_state != sushy.SYSTEM_POWER_STATE_ON:
            system.reset_system(sushy.RESET_ON)

    def force_off(self) -> None:
        system = self._system()
        if system.power_state != sushy.SYSTEM_POWER_STATE_OFF:
            system.reset_system(sushy.RESET_FORCE_OFF)

    def force_restart(self) -> None:
        self._system().reset_system(sushy.RESET_FORCE_RESTART)
