"""Instance-group cells: template revisions, and how desired capacity is split over cells.

A group is materialised as cells, zone x capacity type x revision. The revision is a
stable hash of the template, so any change to it (and only a change) makes a new one.
``split_capacity`` spreads a revision's desired node count evenly over the zones, buys
the spot share the group asks for above its on-demand base, and routes around cells that
are unavailable (out of capacity, cooling down): their share goes to the other zones,
and spot that cannot be had anywhere falls back to on-demand.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field

from molt.api.instancegroup import Capacity, Template

ON_DEMAND = "on-demand"
SPOT = "spot"


def template_revision(template: Template) -> str:
    """A stable 10-hex-digit name for a template: equal templates, equal names."""
    canonical = json.dumps(
        template.model_dump(mode="json", by_alias=True, exclude_none=True),
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


@dataclass(frozen=True, order=True)
class CellKey:
    """Where nodes of one revision run: a zone and a capacity type."""

    zone: str
    capacity_type: str

    def __str__(self) -> str:
        return f"{self.zone}/{self.capacity_type}"


@functools.lru_cache(maxsize=1024)
def cell_key(zone: str, capacity_type: str) -> CellKey:
    """One shared ``CellKey`` per cell: thousands of nodes share a handful of cells."""
    return CellKey(zone, capacity_type)


@dataclass(frozen=True)
class CapacityPlan:
    """Desired nodes per cell, what could not be placed anywhere, and why things moved."""

    cells: dict[CellKey, int]
    unplaced: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(self.cells.values())

    def zone_total(self, zone: str) -> int:
        return sum(count for key, count in self.cells.items() if key.zone == zone)


def spot_share(total: int, capacity: Capacity) -> int:
    """How many of ``total`` nodes the group wants on spot."""
    if SPOT not in capacity.types:
        return 0
    if ON_DEMAND not in capacity.types:
        return total
    above_base = max(0, total - capacity.on_demand_base)
    return above_base * capacity.spot_percent // 100


def split_capacity(
    total: int,
    zones: list[str],
    capacity: Capacity,
    unavailable: frozenset[CellKey] = frozenset(),
) -> CapacityPlan:
    """Spread ``total`` nodes over the group's cells, routing around unavailable ones.

    Each node goes to the available zone with the fewest nodes so far (ties: the fewest of
    that capacity type, then the zone name), so zone totals differ by at most one when
    every cell is available. Spot with no available spot cell falls back to on-demand.
    """
    plan = _split(
        total,
        tuple(sorted(set(zones))),
        tuple(capacity.types),
        capacity.on_demand_base,
        capacity.spot_percent,
        unavailable,
    )
    return CapacityPlan(dict(plan.cells), plan.unplaced, plan.notes)


@functools.lru_cache(maxsize=256)
def _split(
    total: int,
    ordered_zones: tuple[str, ...],
    types: tuple[str, ...],
    on_demand_base: int,
    spot_percent: int,
    unavailable: frozenset[CellKey],
) -> CapacityPlan:
    # Cached: a group reconcile asks for the same split several times, and a split places
    # node by node (a few milliseconds for thousands of nodes).
    capacity = Capacity(types=list(types), on_demand_base=on_demand_base, spot_percent=spot_percent)
    cells = {
        CellKey(zone, kind): 0
        for zone in ordered_zones
        for kind in (ON_DEMAND, SPOT)
        if kind in capacity.types
    }
    notes: list[str] = []
    wanted_spot = spot_share(total, capacity)
    wanted = {ON_DEMAND: total - wanted_spot, SPOT: wanted_spot}

    def open_cells(kind: str) -> list[CellKey]:
        return [key for key in cells if key.capacity_type == kind and key not in unavailable]

    if wanted[SPOT] and not open_cells(SPOT) and ON_DEMAND in capacity.types:
        notes.append(f"no spot cell available: {wanted[SPOT]} node(s) fall back to on-demand")
        wanted[ON_DEMAND] += wanted[SPOT]
        wanted[SPOT] = 0
    unplaced = 0
    zone_totals = dict.fromkeys(ordered_zones, 0)
    for kind in (ON_DEMAND, SPOT):
        candidates = open_cells(kind)
        if not candidates:
            if wanted[kind]:
                notes.append(f"no {kind} cell available: {wanted[kind]} node(s) unplaced")
            unplaced += wanted[kind]
            continue
        for _ in range(wanted[kind]):
            best = min(candidates, key=lambda k: (zone_totals[k.zone], cells[k], k.zone))
            cells[best] += 1
            zone_totals[best.zone] += 1
    for key in sorted(unavailable):
        if key in cells:
            notes.append(f"cell {key} unavailable: its share went to the other cells")
    return CapacityPlan(cells, unplaced, tuple(notes))
