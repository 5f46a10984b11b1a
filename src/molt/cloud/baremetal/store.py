"""Host claims kept in one ConfigMap, so a restarted controller knows whose host is whose.

Why a ConfigMap and not the BMC: Redfish has no field every BMC keeps for a tenant's
notes (``AssetTag`` is optional and often read-only), and power state plus inserted media
cannot tell which group and revision a host serves, nor how far a terminate came. Why
one ConfigMap for every group: a host may sit in several groups' inventories (and in
every revision of one group); a claim must be one place where two launches cannot both
win. Writes replace the ConfigMap at the resourceVersion they read, so two writers
(an old leader, a retry) never both claim a host: the loser re-reads and tries again.

The ConfigMap is ``molt-baremetal-hosts`` in the controller's namespace; each key is a
host name and each value its claim (JSON). Deleting a key releases the host by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.cloud.baremetal.inventory import Claim
from molt.cloud.provider import ProviderError

log = structlog.get_logger(__name__)

CLAIMS_CONFIGMAP = "molt-baremetal-hosts"
WRITE_ATTEMPTS = 8

Change = Callable[[dict[str, Claim]], Any]
"""Edits the claims in place; what it returns, ``update`` returns."""


class ClaimStore:
    """Reads and changes the claims ConfigMap with optimistic concurrency."""

    def __init__(
        self, core: client.CoreV1Api, namespace: str, check_fence: Callable[[], None]
    ) -> None:
        self.core = core
        self.namespace = namespace
        self.check_fence = check_fence
        self._malformed: set[str] = set()

    async def load(self) -> dict[str, Claim]:
        """Every claim (an empty dict when the ConfigMap does not exist yet)."""
        claims, _ = await self._read()
        return claims

    async def update(self, change: Change) -> Any:
        """Apply ``change`` to the current claims and write them back; on a conflict,
        read again and re-apply. ``change`` must be a pure edit of the dict it gets."""
        for _ in range(WRITE_ATTEMPTS):
            claims, version = await self._read()
            before = {k: v.to_json() for k, v in claims.items()}
            result = change(claims)
            after = {k: v.to_json() for k, v in claims.items()}
            if after == before:
                return result
            self.check_fence()
            try:
                await self._write(after, version)
                return result
            except ApiException as error:
                if error.status != 409:
                    raise ProviderError(
                        f"cannot write {self.namespace}/{CLAIMS_CONFIGMAP}: {error.reason}"
                    ) from error
        raise ProviderError(f"{self.namespace}/{CLAIMS_CONFIGMAP} kept changing under a write")

    async def _read(self) -> tuple[dict[str, Claim], str | None]:
        try:
            found = await self.core.read_namespaced_config_map(CLAIMS_CONFIGMAP, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return {}, None
            raise ProviderError(
                f"cannot read {self.namespace}/{CLAIMS_CONFIGMAP}: {error.reason}"
            ) from error
        claims = {}
        for host, text in (found.data or {}).items():
            try:
                claims[host] = Claim.from_json(text)
            except ValueError as error:
                if host not in self._malformed:
                    self._malformed.add(host)
                    log.warning("baremetal.claim_malformed", host=host, error=str(error))
                # Kept out of the pool, never powered: a person has to look at it.
                claims[host] = _placeholder(host)
        return claims, found.metadata.resource_version

    async def _write(self, data: dict[str, str], version: str | None) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CLAIMS_CONFIGMAP,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "molt"},
            },
            "data": data,
        }
        if version is None:
            await self.core.create_namespaced_config_map(self.namespace, body)  # type: ignore[arg-type]
            return
        body["metadata"]["resourceVersion"] = version  # type: ignore[index]
        await self.core.replace_namespaced_config_map(CLAIMS_CONFIGMAP, self.namespace, body)  # type: ignore[arg-type]


def _placeholder(host: str) -> Claim:
    """A claim standing for one that cannot be read: the host stays out of the pool."""
    from datetime import UTC, datetime

    return Claim(
        host=host,
        group="",
        revision="",
        zone="",
        capacity_type="",
        state="wipe-failed",
        address="",
        system_id="",
        secret="",
        claimed_at=datetime.fromtimestamp(0, UTC),
    )
