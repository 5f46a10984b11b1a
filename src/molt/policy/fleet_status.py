"""The fleet at a glance, for ``molt status``: groups with their revisions and cells,
nodes in flight by step, blocked nodes with one-line reasons, the next 24 hours of
expiries, and the watchdogs' states.

Pure: built from what one read of the cluster returns, and the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from molt.api.instancegroup import InstanceGroup
from molt.api.labels import BLOCKED_ANNOTATION, POLICY_ANNOTATION
from molt.api.terminationpolicy import TerminationPolicy
from molt.policy.age import MalformedLaunchTimeError
from molt.policy.selection import covers, leveled, max_age_due
from molt.policy.snapshot import Snapshot

EXPIRY_HOURS = 24
PIPELINE_STEPS = ("selected", "draining", "terminating")


@dataclass(frozen=True)
class CellLine:
    zone: str
    capacity_type: str
    revision: str
    desired: int
    ready: int
    resting_until: str | None = None
    """A cell out of capacity rests until then: routing moved its share elsewhere."""


@dataclass(frozen=True)
class RevisionLine:
    name: str
    state: str
    replicas: int
    ready: int
    changed: str | None = None
    """What this revision's template changed, e.g. ``image img-2`` (None: unknown)."""


@dataclass(frozen=True)
class GroupLine:
    name: str
    state: str
    replicas: int
    ready: int
    current_revision: str | None
    revisions: list[RevisionLine]
    cells: list[CellLine]


@dataclass(frozen=True)
class BlockedLine:
    node: str
    policy: str | None
    message: str


@dataclass(frozen=True)
class FleetStatus:
    at: datetime
    nodes: int
    groups: list[GroupLine]
    in_flight: dict[str, list[str]]
    blocked: list[BlockedLine]
    expiries: list[int]
    """Nodes that come due in each of the next 24 hours (index 0: within the hour)."""
    overdue: int
    """Covered nodes already past the age at which their policy selects them."""
    watchdogs: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, state, message) per Watchdog."""

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "nodes": self.nodes,
            "groups": [
                {
                    "name": g.name,
                    "state": g.state,
                    "replicas": g.replicas,
                    "ready": g.ready,
                    "currentRevision": g.current_revision,
                    "revisions": [vars(r) for r in g.revisions],
                    "cells": [vars(c) for c in g.cells],
                }
                for g in self.groups
            ],
            "inFlight": self.in_flight,
            "blocked": [vars(b) for b in self.blocked],
            "expiriesNext24h": self.expiries,
            "overdue": self.overdue,
            "watchdogs": [{"name": n, "state": s, "message": m} for n, s, m in self.watchdogs],
        }


def fleet_status(
    snapshot: Snapshot,
    policies: list[TerminationPolicy],
    groups: dict[str, InstanceGroup],
    now: datetime,
    *,
    watchdogs: list[tuple[str, str, str]] | None = None,
    changes: dict[tuple[str, str], str] | None = None,
) -> FleetStatus:
    """Summarise one read of the cluster. ``changes`` labels revisions by what changed,
    keyed by (group, revision)."""
    in_flight: dict[str, list[str]] = {step: [] for step in PIPELINE_STEPS}
    blocked: list[BlockedLine] = []
    for node in snapshot.nodes:
        if node.in_pipeline and node.state in in_flight:
            in_flight[node.state].append(node.name)
        message = node.annotations.get(BLOCKED_ANNOTATION)
        if node.in_pipeline and message:
            blocked.append(BlockedLine(node.name, node.annotations.get(POLICY_ANNOTATION), message))
    expiries = [0] * EXPIRY_HOURS
    overdue = 0
    planned = {p.metadata.name: leveled(p, snapshot, now) for p in policies}
    for node in snapshot.nodes:
        if node.in_pipeline:
            continue
        due = _earliest_due(node_policies(policies, node), snapshot, node, now, planned)
        if due is None:
            continue
        if due <= now:
            overdue += 1
            continue
        hour = int((due - now) / timedelta(hours=1))
        if hour < EXPIRY_HOURS:
            expiries[hour] += 1
    return FleetStatus(
        at=now,
        nodes=len(snapshot.nodes),
        groups=[_group_line(g, changes or {}) for _, g in sorted(groups.items())],
        in_flight={step: sorted(names) for step, names in in_flight.items()},
        blocked=sorted(blocked, key=lambda b: b.node),
        expiries=expiries,
        overdue=overdue,
        watchdogs=watchdogs or [],
    )


def node_policies(policies: list[TerminationPolicy], node: Any) -> list[TerminationPolicy]:
    return [p for p in policies if covers(p, node)]


def _earliest_due(
    policies: list[TerminationPolicy],
    snapshot: Snapshot,
    node: Any,
    now: datetime,
    planned: Mapping[str, Mapping[str, datetime]],
) -> datetime | None:
    found: list[datetime] = []
    for policy in policies:
        try:
            due = max_age_due(policy, node, snapshot, now, planned[policy.metadata.name])
        except MalformedLaunchTimeError:
            return None
        if due is not None:
            found.append(due)
    return min(found) if found else None


def _group_line(group: InstanceGroup, changes: dict[tuple[str, str], str]) -> GroupLine:
    status = group.status
    name = group.metadata.name
    if status is None:
        return GroupLine(name, "Pending", 0, 0, None, [], [])
    return GroupLine(
        name=name,
        state=status.state or "Pending",
        replicas=status.replicas,
        ready=status.ready_replicas,
        current_revision=status.current_revision,
        revisions=[
            RevisionLine(r.name, r.state, r.replicas, r.ready, changes.get((name, r.name)))
            for r in status.revisions
        ],
        cells=[
            CellLine(
                c.zone,
                c.capacity_type,
                c.revision,
                c.desired,
                c.ready,
                None if c.available else (c.unavailable_until or "unknown"),
            )
            for c in status.cells
        ],
    )


def sparkline(counts: list[int]) -> str:
    """One character per bucket, from ``▁`` (none) to ``█`` (the busiest bucket)."""
    bars = "▁▂▃▄▅▆▇█"
    top = max(counts, default=0)
    if top == 0:
        return bars[0] * len(counts)
    return "".join(bars[min(7, round(c / top * 7))] if c else " " for c in counts)
