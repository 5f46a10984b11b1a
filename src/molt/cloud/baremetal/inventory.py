"""Host claims and the pure rules around them: which host is free, which Node is whose.

A claim says that one host of the pool belongs to one cell of one InstanceGroup, and how
far its launch or terminate has come. It carries everything needed to finish the work
without the template (BMC address, system id, the credentials Secret, the wipe image), so
a terminate that a restart interrupted resumes even after the template changed.

States: ``launching`` (claimed; media, boot order and power-on under way), ``running``
(powered on: its age counts from ``powered_on_at``), ``terminating`` (powering off and
ejecting), ``wiping`` (the reprovision image is running), ``wipe-failed`` (the wipe did
not finish in time; held back from the pool for a person). A host without a claim is
free; Molt never powers off or restarts a host it has no claim on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Literal

from molt.api.durations import parse_duration
from molt.api.instancegroup import BareMetalHost, Template
from molt.cloud.provider import CellRef
from molt.policy.age import format_rfc3339, parse_rfc3339_or_none

PROVIDER_PREFIX = "baremetal://"
MAC_KEY = "baremetal.molt.dev/mac"
"""The label (or annotation) a Node carries its boot NIC's MAC in, set by whatever
bootstraps the host (a label through the kubelet's ``--node-labels``, where ``-`` must
stand for ``:``). Kubernetes keeps no MAC in a Node's status, and no well-known label or
annotation carries one."""
State = Literal["launching", "running", "terminating", "wiping", "wipe-failed"]
LIVE: frozenset[str] = frozenset({"launching", "running"})
"""States in which a claim is an instance of its cell."""
LEAVING: frozenset[str] = frozenset({"terminating", "wiping"})
"""States in which a terminate is under way (and resumes after a restart)."""


def provider_id(host: str) -> str:
    """The providerID of the Node a host becomes."""
    return f"{PROVIDER_PREFIX}{host}"


def normalise_mac(value: str | None) -> str | None:
    """``value`` as six lower-case hex pairs joined by ``:`` (``-`` or ``:`` accepted
    as separators, any case); None for anything else."""
    if not value:
        return None
    pairs = value.strip().lower().replace("-", ":").split(":")
    if len(pairs) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in pairs
    ):
        return None
    return ":".join(pairs)


def node_mac(labels: Mapping[str, str], annotations: Mapping[str, str]) -> str | None:
    """The MAC a Node carries under ``MAC_KEY`` (the label first, else the annotation),
    normalised; None when it carries none or not a MAC."""
    return normalise_mac(labels.get(MAC_KEY) or annotations.get(MAC_KEY))


def host_of_provider_id(value: str | None) -> str | None:
    """The host a ``baremetal://<host>`` providerID names; None for any other."""
    if value and value.startswith(PROVIDER_PREFIX) and len(value) > len(PROVIDER_PREFIX):
        return value[len(PROVIDER_PREFIX) :]
    return None


@dataclass(frozen=True)
class Claim:
    """One host held by one cell, and the state of its launch or terminate."""

    host: str
    group: str
    revision: str
    zone: str
    capacity_type: str
    state: State
    address: str
    system_id: str
    secret: str
    claimed_at: datetime
    insecure: bool = False
    timeout: float = 30.0
    boot: str = "VirtualMedia"
    image: str | None = None
    ip: str | None = None
    mac: str | None = None
    powered_on_at: datetime | None = None
    wipe_image: str | None = None
    wipe_timeout: float = 1800.0
    wipe_started_at: datetime | None = None

    def __post_init__(self) -> None:
        # Stored as RFC 3339 to the second: hold them so in memory too, so a claim read
        # back compares equal to the one written (claims are matched by claimedAt).
        for key in ("claimed_at", "powered_on_at", "wipe_started_at"):
            value = getattr(self, key)
            if value is not None and value.microsecond:
                object.__setattr__(self, key, value.replace(microsecond=0))

    @property
    def cell(self) -> CellRef:
        return CellRef(self.group, self.revision, self.zone, self.capacity_type)

    def moved(self, state: State, **changes: object) -> Claim:
        """This claim in another state (with other fields changed too)."""
        return replace(self, state=state, **changes)  # type: ignore[arg-type]

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("claimed_at", "powered_on_at", "wipe_started_at"):
            value = data[key]
            data[key] = format_rfc3339(value) if value is not None else None
        return json.dumps({k: v for k, v in data.items() if v is not None}, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Claim:
        """Parse a stored claim; raises ValueError for one that is not."""
        try:
            data = json.loads(text)
            for key in ("claimed_at", "powered_on_at", "wipe_started_at"):
                data[key] = parse_rfc3339_or_none(data.get(key))
            if data["claimed_at"] is None:
                raise KeyError("claimed_at")
            return Claim(**data)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a host claim: {error}") from error


def new_claim(cell: CellRef, host: BareMetalHost, template: Template, now: datetime) -> Claim:
    """A ``launching`` claim of ``host`` for ``cell`` from the cell's template."""
    bare = template.baremetal
    if bare is None:
        raise ValueError(f"cell {cell}: the template has no baremetal block")
    wipe = bare.reprovision
    return Claim(
        host=host.name,
        group=cell.group,
        revision=cell.revision,
        zone=cell.zone,
        capacity_type=cell.capacity_type,
        state="launching",
        address=host.redfish.address.rstrip("/"),
        system_id=host.redfish.system_id,
        secret=bare.credentials_secret,
        claimed_at=now,
        insecure=host.redfish.insecure_skip_verify,
        timeout=parse_duration(bare.bmc_timeout).total_seconds(),
        boot=bare.boot,
        image=template.image,
        ip=host.ip,
        mac=normalise_mac(host.mac),
        wipe_image=wipe.image if wipe is not None else None,
        wipe_timeout=parse_duration(wipe.timeout).total_seconds() if wipe is not None else 0.0,
    )


def free_hosts(
    hosts: Sequence[BareMetalHost],
    zone: str,
    claims: Mapping[str, Claim],
    held_back: Iterable[str] = (),
) -> list[BareMetalHost]:
    """The hosts of ``zone`` no one claims and none held back (a BMC that failed a
    moment ago), in inventory order."""
    skip = set(held_back)
    return [h for h in hosts if h.zone == zone and h.name not in claims and h.name not in skip]


@dataclass(frozen=True)
class NodeMatch:
    """Which claimed host a Node is: ``host``, or None with ``ambiguous`` naming the
    hosts its MAC or IP fits when it fits more than one (refused, never guessed)."""

    host: str | None
    ambiguous: tuple[str, ...] = ()


def match_node(
    provider_id_value: str | None,
    addresses: Sequence[str],
    claims: Mapping[str, Claim],
    mac: str | None = None,
) -> NodeMatch:
    """The claimed host a Node is: by its ``baremetal://`` providerID; else by its MAC
    (``MAC_KEY``) equal to a claim's ``mac``; else by an address equal to a claim's
    ``ip``, unless that claim's MAC is known and differs from the Node's. A MAC or IP
    that fits two claims matches nothing, and the match says which."""
    named = host_of_provider_id(provider_id_value)
    if named is not None:
        return NodeMatch(named)
    if provider_id_value:
        return NodeMatch(None)  # another provider's node
    wanted = normalise_mac(mac)
    if wanted is not None:
        by_mac = sorted(c.host for c in claims.values() if c.mac == wanted)
        if len(by_mac) == 1:
            return NodeMatch(by_mac[0])
        if by_mac:
            return NodeMatch(None, tuple(by_mac))
    addressed = set(addresses)
    by_ip = sorted(
        c.host
        for c in claims.values()
        if c.ip and c.ip in addressed and (wanted is None or c.mac is None or c.mac == wanted)
    )
    if len(by_ip) == 1:
        return NodeMatch(by_ip[0])
    return NodeMatch(None, tuple(by_ip) if by_ip else ())


def host_for_node(
    provider_id_value: str | None,
    addresses: Sequence[str],
    claims: Mapping[str, Claim],
    mac: str | None = None,
) -> str | None:
    """The claimed host a Node is (see ``match_node``); None for none or more than one."""
    return match_node(provider_id_value, addresses, claims, mac).host


def live_in(claims: Mapping[str, Claim], group: str) -> dict[CellRef, list[Claim]]:
    """A group's instances: its claims that are launching or running, by cell."""
    cells: dict[CellRef, list[Claim]] = {}
    for claim in sorted(claims.values(), key=lambda c: c.host):
        if claim.group == group and claim.state in LIVE:
            cells.setdefault(claim.cell, []).append(claim)
    return cells


def claim_hosts(
    current: dict[str, Claim],
    hosts: Sequence[BareMetalHost],
    cell: CellRef,
    template: Template,
    wanted: int,
    now: datetime,
    held_back: Iterable[str] = (),
) -> list[Claim]:
    """Claim up to ``wanted`` free hosts of the cell's rack in ``current`` (edited in
    place); the new claims, fewer than wanted when the rack runs out."""
    taken = []
    for host in free_hosts(hosts, cell.zone, current, held_back)[: max(0, wanted)]:
        current[host.name] = new_claim(cell, host, template, now)
        taken.append(current[host.name])
    return taken


def release(current: dict[str, Claim], claim: Claim, *, only_in: Iterable[str] = ()) -> bool:
    """Drop ``claim`` from ``current`` if the host still holds that very claim (same
    claimedAt) and, when ``only_in`` names states, is in one of them. Whether it went."""
    found = current.get(claim.host)
    states = set(only_in)
    if found is None or found.claimed_at != claim.claimed_at:
        return False
    if states and found.state not in states:
        return False
    del current[claim.host]
    return True
