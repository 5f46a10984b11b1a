"""``BareMetalProvider``: cells of physical hosts claimed from an inventory, over Redfish.

A cell (rack x capacity type x revision) holds the hosts of its rack that it claimed.
Scaling up claims free hosts of the rack from ``template.baremetal.hosts`` (recorded in
the claims ConfigMap before any BMC is touched), then, in the background, inserts the
template's image as virtual media (or sets a one-time PXE boot), sets a one-time boot
from it and powers the host on. The host's Node is found by the providerID
``baremetal://<host>`` (else by the host's ``mac`` in the Node's label or annotation
``baremetal.molt.dev/mac``, else by the host's ``ip`` among the Node's addresses; a MAC
or IP that fits two claimed hosts matches neither) and its age counts from that power-on.

Terminating powers the host off (ForceOff), then in the background waits for it to be
off, ejects the media, boots the template's reprovision image once (it wipes the disks
and powers the host off) and releases the host to the pool. Every step is recorded in
the host's claim, so a restarted controller resumes a half-done terminate (``observe``
restarts the work of every claim in flight). Molt never powers off or restarts a host it
has no claim on, and never claims a host it finds powered on.

Failures: a BMC that errs or does not answer within the template's ``bmcTimeout`` fails
the launch; the failure is reported in its cell's tail (so it counts against the rack),
the claim is released and the host is held back from the pool for a while. A rack
with no free host raises ``CapacityError``: the controller routes its share to other
racks for the capacity cool-down.

BMC credentials come from the Secret the template names (keys ``username`` and
``password``), in the controller's namespace (``MOLT_NAMESPACE``, default
``molt-system``), where the claims ConfigMap lives too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from molt.api.instancegroup import Template
from molt.cloud.baremetal.inventory import (
    LEAVING,
    LIVE,
    Claim,
    claim_hosts,
    host_of_provider_id,
    live_in,
    match_node,
    node_mac,
    provider_id,
    release,
)
from molt.cloud.baremetal.redfish import Bmc, Credentials
from molt.cloud.baremetal.store import ClaimStore
from molt.cloud.provider import (
    CapacityError,
    CellObservation,
    CellRef,
    Instance,
    InstanceChecker,
    LaunchFailure,
    NodeOrigin,
    Provider,
    ProviderError,
    Rebooter,
    Registrar,
)
from molt.policy.snapshot import NodeView

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_NAMESPACE = "molt-system"
FAILURE_TAIL = 20
HOLD_BACK = timedelta(minutes=5)
"""A host whose BMC failed a launch is not picked again for this long."""
OFF_WAIT = 180.0
"""How long a terminate waits for a host to report Off before it tries again."""
POWER_SETTLE = 30.0
"""Seconds a BMC may take to apply a power-on: until then a host that reads Off may be
one whose wipe has not started yet."""
RETRY_DELAY = 10.0
"""Pause between attempts of a terminate whose BMC call failed."""


class BareMetalProvider:
    """Hosts from an inventory as cells (``Provider``, ``Registrar``, ``Rebooter``,
    ``InstanceChecker``)."""

    name = "baremetal"

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        check_fence: Callable[[], None] = lambda: None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll_interval: float = 2.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.check_fence = check_fence
        self.now = now
        self.poll_interval = poll_interval
        self.store = ClaimStore(self.core, namespace, check_fence)
        self._desired: dict[CellRef, int] = {}
        self._failures: dict[CellRef, deque[LaunchFailure]] = {}
        self._held_back: dict[str, datetime] = {}
        self._work: dict[str, asyncio.Task[None]] = {}
        self._claims: dict[str, Claim] = {}
        """The claims as last read (``owns`` answers from them)."""
        self._bmcs: dict[tuple[str, str, str, bool], Bmc] = {}
        self._ambiguous: dict[str, tuple[str, ...]] = {}
        """Node -> the hosts it last fitted ambiguously (reported once)."""
        self._worked: dict[str, tuple[datetime, str]] = {}
        """Host -> the claim (claimedAt, state) this process last started work for."""

    # -- reads -------------------------------------------------------------------------

    async def _load(self) -> dict[str, Claim]:
        self._claims = await self.store.load()
        return self._claims

    async def observe(self, group: str) -> list[CellObservation]:
        claims = await self._load()
        self._resume(claims)
        live = live_in(claims, group)
        names = await self._node_names([c for cs in live.values() for c in cs])
        cells = (
            set(live)
            | {c for c in self._desired if c.group == group}
            | {c for c in self._failures if c.group == group}
        )
        return [
            CellObservation(
                cell,
                self._desired.get(cell, len(live.get(cell, []))),
                tuple(self._instance(c, names.get(c.host)) for c in live.get(cell, [])),
                tuple(self._failures.get(cell, ())),
            )
            for cell in sorted(cells)
        ]

    @staticmethod
    def _instance(claim: Claim, node_name: str | None = None) -> Instance:
        return Instance(
            instance_id=claim.host,
            launched_at=claim.powered_on_at or claim.claimed_at,
            node_name=node_name,
            provider_id=provider_id(claim.host),
        )

    async def _node_names(self, claims: list[Claim]) -> dict[str, str]:
        """Host -> Node name, for claims with an ``ip`` or ``mac`` (Nodes that joined
        without a baremetal providerID are found by them); nothing is listed when none
        has either."""
        if not any(c.ip or c.mac for c in claims):
            return {}
        try:
            nodes = await self.core.list_node()
        except ApiException as error:
            raise ProviderError(f"cannot list nodes: {error.reason}") from error
        mine = {c.host: c for c in claims}
        found = {}
        for node in nodes.items:
            pid = node.spec.provider_id if node.spec else None
            if pid and not pid.startswith("baremetal"):
                continue
            meta = node.metadata
            addresses = [a.address for a in (node.status.addresses if node.status else None) or []]
            mac = node_mac(meta.labels or {}, meta.annotations or {})
            host = self._match(meta.name, pid, addresses, mac, mine)
            if host is not None and host in mine:
                found[host] = meta.name
        return found

    def _match(
        self,
        node: str,
        pid: str | None,
        addresses: Sequence[str],
        mac: str | None,
        claims: Mapping[str, Claim],
    ) -> str | None:
        """``match_node``, with a Node whose MAC or IP fits two hosts reported (once per
        Node and set of hosts) and matched to none."""
        found = match_node(pid, addresses, claims, mac)
        if not found.ambiguous:
            self._ambiguous.pop(node, None)
        elif self._ambiguous.get(node) != found.ambiguous:
            self._ambiguous[node] = found.ambiguous
            log.warning(
                "baremetal.ambiguous_node",
                node=node,
                hosts=list(found.ambiguous),
                mac=mac,
                addresses=list(addresses),
            )
        return found.host

    def _why(self, node: NodeView) -> str:
        """Why ``node`` matched no host, for an error."""
        fits = self._ambiguous.get(node.name)
        if fits and not node.provider_id:
            return f"its MAC or IP fits hosts {', '.join(fits)}; Molt does not guess"
        return f"providerID {node.provider_id!r}"

    def _host_for(self, node: NodeView, claims: Mapping[str, Claim]) -> str | None:
        mac = node_mac(node.labels, node.annotations)
        return self._match(node.name, node.provider_id, node.addresses, mac, claims)

    def owns(self, node: NodeView) -> bool:
        if host_of_provider_id(node.provider_id) is not None:
            return True
        return not node.provider_id and self._host_for(node, self._claims) is not None

    async def describe_node(self, node: NodeView) -> NodeOrigin | None:
        claims = await self._load()
        host = self._host_for(node, claims)
        claim = claims.get(host) if host else None
        if claim is None or claim.state not in LIVE:
            return None
        return NodeOrigin(claim.cell, self._instance(claim, node.name))

    async def instance_exists(self, node: NodeView) -> bool | None:
        try:
            claims = await self._load()
        except ProviderError:
            return None
        host = self._host_for(node, claims)
        if host is None:
            return None
        claim = claims.get(host)
        return claim is not None and claim.state in LIVE

    # -- launch ------------------------------------------------------------------------

    async def scale(self, cell: CellRef, template: Template, desired: int) -> None:
        if desired < 0:
            raise ProviderError(f"cannot scale {cell} to {desired}")
        bare = template.baremetal
        if bare is None:
            raise ProviderError(f"cell {cell}: a baremetal template needs template.baremetal")
        self.check_fence()
        claims = await self._load()
        have = len(live_in(claims, cell.group).get(cell, []))
        self._desired[cell] = desired
        missing = desired - have
        if missing <= 0:
            return
        now = self.now()
        held = {h for h, until in self._held_back.items() if until > now}

        taken: list[Claim] = await self.store.update(
            lambda current: claim_hosts(current, bare.hosts, cell, template, missing, now, held)
        )
        for claim in taken:
            self._start(claim)
        log.info("baremetal.scaled", cell=str(cell), desired=desired, claimed=len(taken))
        if len(taken) < missing:
            message = (
                f"no free host in rack {cell.zone}: {missing - len(taken)} of {missing} "
                "launches have no host"
            )
            self._fail(cell, message, capacity=True)
            raise CapacityError(message)

    def _start(self, claim: Claim) -> None:
        running = self._work.get(claim.host)
        if running is not None and not running.done():
            return
        work = self._launch(claim) if claim.state == "launching" else self._leave(claim)
        self._worked[claim.host] = (claim.claimed_at, claim.state)
        task = asyncio.create_task(work, name=f"baremetal-{claim.host}")
        self._work[claim.host] = task
        task.add_done_callback(functools.partial(self._finished, claim.host))

    def _finished(self, host: str, task: asyncio.Task[None]) -> None:
        if self._work.get(host) is task:
            del self._work[host]

    def _resume(self, claims: dict[str, Claim]) -> None:
        """Restart the work of claims in flight that no task of this process carries (a
        restart, or a task that gave up). A claim this process already worked through
        in the state read (the read may predate the write that moved it on) is not
        started again."""
        for claim in claims.values():
            if claim.state != "launching" and claim.state not in LEAVING:
                continue
            if self._worked.get(claim.host) == (claim.claimed_at, claim.state):
                continue
            self._start(claim)

    async def _launch(self, claim: Claim) -> None:
        host = claim.host
        touched = False
        try:
            bmc = await self._bmc(claim)
            seen = await self._call(claim, "read the power state", bmc.state)
            if seen.powered_on:
                if claim.boot == "VirtualMedia" and seen.media == claim.image:
                    # Powered on by this claim before a restart cut the launch short.
                    await self._mark_running(claim, claim.powered_on_at or self.now())
                    return
                self._held_back[host] = self.now() + HOLD_BACK * 6
                raise ProviderError(
                    f"host {host} is powered on, not by Molt: left alone and not claimed"
                )
            touched = True
            if claim.boot == "VirtualMedia":
                if not claim.image:
                    raise ProviderError(f"host {host}: no image to insert")
                await self._call(claim, f"insert {claim.image}", bmc.insert, claim.image)
            await self._call(claim, "set a one-time boot", bmc.boot_once, claim.boot)
            # The power-on time is recorded before it is asked for: once the host can
            # boot, its claim already says since when it runs (its age never counts short).
            powered = self.now()
            claim = await self._move(claim, claim.moved("launching", powered_on_at=powered))
            self.check_fence()
            await self._call(claim, "power on", bmc.power_on)
            await self._mark_running(claim, powered)
            log.info("baremetal.launched", host=host, cell=str(claim.cell))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._launch_failed(claim, error, touched)

    async def _mark_running(self, claim: Claim, at: datetime) -> None:
        def run(current: dict[str, Claim]) -> None:
            found = current.get(claim.host)
            same = found is not None and found.claimed_at == claim.claimed_at
            if found is not None and same and found.state == "launching":
                current[claim.host] = found.moved("running", powered_on_at=at)

        await self.store.update(run)

    async def _launch_failed(self, claim: Claim, error: Exception, touched: bool) -> None:
        host = claim.host
        message = f"host {host}: {error}"
        self._fail(claim.cell, message, capacity=False)
        self._held_back.setdefault(host, self.now() + HOLD_BACK)
        log.warning("baremetal.launch_failed", host=host, cell=str(claim.cell), error=str(error))
        if touched:
            # Best effort: leave the host as it was found (it is still ours to touch).
            with contextlib.suppress(Exception):
                bmc = await self._bmc(claim)
                self.check_fence()
                await self._call(claim, "power off", bmc.force_off)
                await self._call(claim, "eject", bmc.eject)

        try:
            await self.store.update(lambda current: release(current, claim, only_in={"launching"}))
        except ProviderError as failure:  # the next observe resumes the launch, or not
            log.warning("baremetal.release_failed", host=host, error=str(failure))

    def _fail(self, cell: CellRef, message: str, *, capacity: bool) -> None:
        tail = self._failures.setdefault(cell, deque(maxlen=FAILURE_TAIL))
        tail.append(LaunchFailure(self.now(), message, capacity))

    # -- terminate ---------------------------------------------------------------------

    async def terminate(self, node: NodeView) -> None:
        claims = await self._load()
        host = self._host_for(node, claims)
        if host is None:
            raise ProviderError(f"node {node.name} is not one baremetal host: {self._why(node)}")
        await self._terminate(claims, host, None)

    async def terminate_instance(self, cell: CellRef, instance_id: str) -> None:
        await self._terminate(await self._load(), instance_id, cell)

    async def _terminate(self, claims: dict[str, Claim], host: str, cell: CellRef | None) -> None:
        claim = claims.get(host)
        if claim is None:
            return  # released already: gone, and not Molt's to power off
        if cell is not None and claim.cell != cell:
            raise ProviderError(f"host {host} belongs to cell {claim.cell}, not {cell}")
        if claim.state in LIVE:
            running = self._work.pop(host, None)
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await running

            def leave(current: dict[str, Claim]) -> Claim | None:
                found = current.get(host)
                if found is None:
                    return None
                if found.state in LIVE:
                    current[host] = found.moved("terminating")
                    return current[host]
                return found

            moved = await self.store.update(leave)
            if moved is None:
                return
            if claim.cell in self._desired:
                self._desired[claim.cell] = max(0, self._desired[claim.cell] - 1)
            claim = moved
        if claim.state == "terminating":
            # Off now, so the machine stops serving before its Node is deleted.
            bmc = await self._bmc(claim)
            self.check_fence()
            await self._call(claim, "power off", bmc.force_off)
            log.info("baremetal.powered_off", host=host, cell=str(claim.cell))
        if claim.state in LEAVING:
            self._start(claim)

    async def _leave(self, claim: Claim) -> None:
        """Finish a terminate: off, eject, wipe (when the template names a reprovision
        image), release. Retries until done; every step is recorded in the claim."""
        while True:
            try:
                after = await self._leave_step(claim)
                if after is None or after.state not in LEAVING:
                    return
                claim = after
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("baremetal.terminate_retry", host=claim.host, error=str(error))
                await asyncio.sleep(RETRY_DELAY)

    async def _leave_step(self, claim: Claim) -> Claim | None:
        """One step of a terminate; the claim after it, None once the host is released."""
        bmc = await self._bmc(claim)
        if claim.state == "terminating":
            self.check_fence()
            await self._call(claim, "power off", bmc.force_off)
            await self._wait_off(claim, bmc, OFF_WAIT)
            await self._call(claim, "eject", bmc.eject)
            if not claim.wipe_image:
                await self._release(claim)
                return None
            await self._call(claim, f"insert {claim.wipe_image}", bmc.insert, claim.wipe_image)
            await self._call(claim, "set a one-time boot", bmc.boot_once, "VirtualMedia")
            self.check_fence()
            await self._call(claim, "power on the wipe", bmc.power_on)
            log.info("baremetal.wiping", host=claim.host)
            return await self._move(claim, claim.moved("wiping", wipe_started_at=self.now()))
        if claim.state == "wiping":
            started = claim.wipe_started_at or self.now()
            left = claim.wipe_timeout - (self.now() - started).total_seconds()
            settled = started + timedelta(seconds=POWER_SETTLE)
            if not await self._wait_off(claim, bmc, max(0.0, left), settle_until=settled):
                self.check_fence()
                await self._call(claim, "power off", bmc.force_off)
                log.warning("baremetal.wipe_failed", host=claim.host)
                return await self._move(claim, claim.moved("wipe-failed"))
            await self._call(claim, "eject", bmc.eject)
            await self._release(claim)
            return None
        return claim

    async def _wait_off(
        self, claim: Claim, bmc: Bmc, within: float, settle_until: datetime | None = None
    ) -> bool:
        """Poll until the host reports Off. Before ``settle_until`` an Off counts only
        after an On was seen (a wipe just powered on may still read Off); after it, Off
        is the wipe's end, also one that ended while no controller ran. False when
        time ran out (only with ``settle_until``)."""
        deadline = asyncio.get_running_loop().time() + within
        was_on = False
        while True:
            seen = await self._call(claim, "read the power state", bmc.state)
            if seen.powered_on:
                was_on = True
            elif was_on or settle_until is None or self.now() >= settle_until:
                return True
            if asyncio.get_running_loop().time() >= deadline:
                if settle_until is not None:
                    return False
                raise ProviderError(f"host {claim.host} is not off after {within:.0f}s")
            await asyncio.sleep(self.poll_interval)

    async def _move(self, claim: Claim, moved: Claim) -> Claim:
        def change(current: dict[str, Claim]) -> None:
            found = current.get(claim.host)
            if found is not None and found.claimed_at == claim.claimed_at:
                current[claim.host] = moved

        await self.store.update(change)
        return moved

    async def _release(self, claim: Claim) -> None:
        await self.store.update(lambda current: release(current, claim))
        log.info("baremetal.released", host=claim.host)

    # -- reboot ------------------------------------------------------------------------

    async def reboot(self, node: NodeView) -> None:
        """ForceRestart of the host behind ``node``; only hosts Molt claimed and runs."""
        claims = await self._load()
        host = self._host_for(node, claims)
        claim = claims.get(host) if host else None
        if claim is None or claim.state != "running":
            raise ProviderError(
                f"node {node.name} is not a running host of Molt's; Molt only restarts "
                "hosts it claimed"
            )
        bmc = await self._bmc(claim)
        self.check_fence()
        await self._call(claim, "ForceRestart", bmc.force_restart)
        log.info("baremetal.rebooted", host=claim.host, node=node.name)

    # -- cells -------------------------------------------------------------------------

    async def delete_cell(self, cell: CellRef) -> None:
        if live_in(await self._load(), cell.group).get(cell):
            raise ProviderError(f"cell {cell} still has hosts")
        self._desired.pop(cell, None)
        self._failures.pop(cell, None)

    async def close(self) -> None:
        """Stop the work in flight; the claims say where to resume."""
        tasks = list(self._work.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._work.clear()

    # -- plumbing ----------------------------------------------------------------------

    async def _credentials(self, secret: str) -> Credentials:
        try:
            found = await self.core.read_namespaced_secret(secret, self.namespace)
        except ApiException as error:
            raise ProviderError(
                f"cannot read the BMC credentials Secret {self.namespace}/{secret}: {error.reason}"
            ) from error
        data = found.data or {}
        try:
            return Credentials(
                base64.b64decode(data["username"]).decode(),
                base64.b64decode(data["password"]).decode(),
            )
        except (KeyError, ValueError) as error:
            raise ProviderError(
                f"Secret {self.namespace}/{secret} needs keys username and password"
            ) from error

    async def _bmc(self, claim: Claim) -> Bmc:
        credentials = await self._credentials(claim.secret)
        key = (claim.address, claim.system_id, credentials.username, claim.insecure)
        found = self._bmcs.get(key)
        if found is not None and found.credentials == credentials:
            return found

        def connect() -> Bmc:
            return Bmc(
                claim.address,
                claim.system_id,
                credentials,
                timeout=claim.timeout,
                verify=not claim.insecure,
            )

        bmc = await self._call(claim, "connect", connect)
        self._bmcs[key] = bmc
        return bmc

    async def _call(self, claim: Claim, what: str, call: Callable[..., T], *args: Any) -> T:
        """A sushy call in a worker thread; any failure becomes ProviderError."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(call, *args), timeout=claim.timeout * 4 + 5
            )
        except TimeoutError as error:
            raise ProviderError(
                f"BMC {claim.address} did not answer ({what}) within {claim.timeout:.0f}s"
            ) from error
        except ProviderError:
            raise
        except Exception as error:
            if "timed out" in str(error).lower():
                raise ProviderError(
                    f"BMC {claim.address} did not answer ({what}) within "
                    f"{claim.timeout:.0f}s: {error}"
                ) from error
            raise ProviderError(f"BMC {claim.address}: cannot {what}: {error}") from error


def baremetal_provider_from_environment(
    api: client.ApiClient, check_fence: Callable[[], None]
) -> BareMetalProvider:
    """A BareMetalProvider in the controller's namespace (``MOLT_NAMESPACE``)."""
    return BareMetalProvider(
        api, namespace=os.environ.get("MOLT_NAMESPACE", DEFAULT_NAMESPACE), check_fence=check_fence
    )


if TYPE_CHECKING:
    _conforms: Provider = BareMetalProvider(client.ApiClient())
    _registers: Registrar = BareMetalProvider(client.ApiClient())
    _reboots: Rebooter = BareMetalProvider(client.ApiClient())
    _checks: InstanceChecker = BareMetalProvider(client.ApiClient())
