"""Remediation: the escalation chain for unhealthy nodes, and the breaker that knows zones.

A TerminationPolicy with ``spec.remediation`` does not replace a node its condition or
taint rules select straight away: the node goes through the chain's steps in order.
``reboot`` restarts the machine where its provider can (the step is skipped where it
cannot) and waits up to the step's timeout for the node to be Ready and healthy again;
``replace`` hands it to the termination pipeline. Where the node stands is one annotation
on the node (``molt.dev/remediation``), so a restarted controller resumes the chain.

The breaker counts, per policy, group and zone, the nodes its condition and taint rules
match now (their ``for`` not awaited: a zone that fails at once trips the breaker before
its first node is due). Above ``maxUnhealthy.zone`` remediation pauses in that zone only;
above ``maxUnhealthy.group`` in the whole group. Paused means no step starts and no
reboot escalates there; a node already rebooting comes back, or not, on its own.

Everything here is pure: the reconciler reads the node and the provider's capability and
carries out what ``decide`` returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from molt.api.durations import format_duration, parse_duration
from molt.api.labels import REMEDIATION_ANNOTATION
from molt.api.terminationpolicy import RemediationStep, TerminationPolicy
from molt.api.types import resolve_count_or_percent
from molt.policy.age import format_rfc3339, parse_rfc3339
from molt.policy.selection import covers, health_candidate, health_due, taint_matches
from molt.policy.snapshot import NodeView

StepKind = Literal["reboot", "replace", "exhausted"]
"""``exhausted``: every step was tried (a chain without ``replace``); the node is kept."""
NOTES_KEPT = 4
"""How many lines about finished steps a record keeps (the newest)."""


class MalformedRecordError(ValueError):
    """The node's remediation annotation cannot be read."""


@dataclass(frozen=True)
class Record:
    """The value of ``molt.dev/remediation``: the step a node is at, and since when."""

    step: int
    kind: StepKind
    started_at: datetime
    cordoned: bool = False
    """Molt cordoned the node for a reboot: it uncordons it if the node recovers."""
    done: tuple[str, ...] = ()
    """One line per step already finished (e.g. ``reboot did not help within 10m``)."""

    def to_json(self) -> str:
        value: dict[str, object] = {
            "step": self.step,
            "kind": self.kind,
            "startedAt": format_rfc3339(self.started_at),
        }
        if self.cordoned:
            value["cordoned"] = True
        if self.done:
            value["done"] = list(self.done)
        return json.dumps(value, separators=(",", ":"))

    def describe(self, total: int) -> str:
        if self.kind == "exhausted":
            return f"every remediation step was tried ({total})"
        return f"remediation step {self.step + 1}/{total} ({self.kind}) since " + format_rfc3339(
            self.started_at
        )


def read_record(value: str | None) -> Record | None:
    """Parse the annotation; None when absent. Raises ``MalformedRecordError``."""
    if value is None:
        return None
    try:
        raw = json.loads(value)
    except ValueError as error:
        raise MalformedRecordError(
            f"{REMEDIATION_ANNOTATION} is not JSON: {value[:80]!r}"
        ) from error
    if not isinstance(raw, dict):
        raise MalformedRecordError(f"{REMEDIATION_ANNOTATION} is not a JSON object")
    step, kind, started = raw.get("step"), raw.get("kind"), raw.get("startedAt")
    done = raw.get("done", [])
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise MalformedRecordError(f"{REMEDIATION_ANNOTATION}: step must be a number >= 0")
    if kind not in ("reboot", "replace", "exhausted"):
        raise MalformedRecordError(f"{REMEDIATION_ANNOTATION}: unknown kind {kind!r}")
    if not isinstance(started, str):
        raise MalformedRecordError(f"{REMEDIATION_ANNOTATION}: startedAt is missing")
    if not isinstance(done, list) or not all(isinstance(line, str) for line in done):
        raise MalformedRecordError(f"{REMEDIATION_ANNOTATION}: done must be a list of strings")
    try:
        started_at = parse_rfc3339(started)
    except ValueError as error:
        raise MalformedRecordError(
            f"{REMEDIATION_ANNOTATION}: startedAt is not RFC 3339: {started!r}"
        ) from error
    return Record(step, kind, started_at, raw.get("cordoned") is True, tuple(done))


def record_of(node: NodeView) -> Record | None:
    """The node's record, a malformed one read as none (the reconciler reports it)."""
    try:
        return read_record(node.annotations.get(REMEDIATION_ANNOTATION))
    except MalformedRecordError:
        return None


# Which nodes are unhealthy.


def matches_health_rule(policy: TerminationPolicy, node: NodeView) -> bool:
    """Whether a condition or taint rule of the policy matches the node now, however
    briefly (the rules' ``for`` is not awaited): what the breaker counts."""
    rules = policy.spec.rules
    for rule in rules.conditions:
        if any(c.type == rule.type and c.status == rule.status for c in node.conditions):
            return True
    return any(taint_matches(rule, taint) for rule in rules.taints for taint in node.taints)


def remediating_policy(
    policies: Iterable[TerminationPolicy], node: NodeView
) -> TerminationPolicy | None:
    """The policy whose remediation chain a node follows: the first by name that covers it
    and has ``remediation`` (a node covered by several follows one chain)."""
    for policy in sorted(policies, key=lambda p: p.metadata.name):
        if policy.spec.remediation is not None and covers(policy, node):
            return policy
    return None


# The breaker.


@dataclass(frozen=True)
class Tally:
    """Unhealthy nodes against all nodes in one group, or one zone of a group."""

    group: str
    zone: str | None
    """None: the whole group."""
    unhealthy: int
    total: int
    allowed: int

    @property
    def tripped(self) -> bool:
        return self.unhealthy > self.allowed

    @property
    def where(self) -> str:
        group = self.group or "(no group)"
        return f"group {group}" if self.zone is None else f"zone {self.zone} of group {group}"

    def describe(self, limit: int | str) -> str:
        return (
            f"{self.unhealthy} of {self.total} nodes unhealthy in {self.where}, above "
            f"maxUnhealthy {limit} ({self.allowed} allowed)"
        )


@dataclass(frozen=True)
class Breaker:
    """One policy's breaker: every group's and zone's tally, and where it is tripped."""

    policy: str
    group_limit: int | str
    zone_limit: int | str
    groups: dict[str, Tally] = field(default_factory=dict)
    zones: dict[tuple[str, str], Tally] = field(default_factory=dict)

    def paused(self, group: str | None, zone: str | None) -> str | None:
        """Why remediation is paused where a node of ``group`` in ``zone`` is; None if not."""
        whole = self.groups.get(group or "")
        if whole is not None and whole.tripped:
            return "remediation paused: " + whole.describe(self.group_limit)
        part = self.zones.get((group or "", zone or ""))
        if part is not None and part.tripped:
            return "remediation paused: " + part.describe(self.zone_limit)
        return None

    def tripped(self) -> list[Tally]:
        """The tripped scopes: groups first, then zones of groups that are not tripped
        (a group-wide pause covers its zones), in name order."""
        found = [t for _, t in sorted(self.groups.items()) if t.tripped]
        whole = {t.group for t in found}
        found += [t for _, t in sorted(self.zones.items()) if t.tripped and t.group not in whole]
        return found

    def zone_paused(self) -> dict[tuple[str, str], bool]:
        """Every (group, zone) the policy covers: paused or not (for the metric)."""
        return {key: self.paused(*key) is not None for key in sorted(self.zones)}

    def summary(self) -> str:
        tripped = self.tripped()
        if not tripped:
            return "remediation is not paused anywhere"
        return "; ".join(
            t.describe(self.group_limit if t.zone is None else self.zone_limit) for t in tripped
        )


def breaker(policy: TerminationPolicy, nodes: Iterable[NodeView]) -> Breaker:
    """Count the unhealthy nodes the policy covers, per group and per zone of a group."""
    spec = policy.spec.remediation
    limits = spec.max_unhealthy if spec is not None else None
    group_limit: int | str = limits.group if limits is not None else "100%"
    zone_limit: int | str = limits.zone if limits is not None else "100%"
    totals: dict[tuple[str, str], list[int]] = {}
    for node in nodes:
        if not covers(policy, node):
            continue
        counts = totals.setdefault((node.group or "", node.zone or ""), [0, 0])
        counts[1] += 1
        if matches_health_rule(policy, node):
            counts[0] += 1
    zones = {
        key: Tally(key[0], key[1], bad, total, resolve_count_or_percent(zone_limit, total))
        for key, (bad, total) in totals.items()
    }
    per_group: dict[str, list[int]] = {}
    for (group, _), (bad, total) in totals.items():
        counts = per_group.setdefault(group, [0, 0])
        counts[0] += bad
        counts[1] += total
    groups = {
        group: Tally(group, None, bad, total, resolve_count_or_percent(group_limit, total))
        for group, (bad, total) in per_group.items()
    }
    return Breaker(policy.metadata.name, group_limit, zone_limit, groups, zones)


# The chain.


Action = Literal["idle", "wait", "hold", "start", "recovered"]


@dataclass(frozen=True)
class Decision:
    """What to do with one node now."""

    action: Action
    """``idle``: nothing to do (not unhealthy, or the pipeline has it); ``wait``: a step
    is running; ``hold``: the breaker holds it; ``start``: write ``record`` (and reboot
    when it is a reboot step); ``recovered``: clear the record, keep the node."""
    message: str = ""
    record: Record | None = None
    """The record to write (``start``)."""
    reboot: bool = False
    cordon: bool = False
    """Cordon the node in the same write (a schedulable node about to reboot)."""
    uncordon: bool = False
    skipped: tuple[str, ...] = ()
    """Steps passed over on the way to ``record`` (lines for Events)."""
    finished: str | None = None
    """The step that just ended (it timed out), for an Event."""
    recheck_at: datetime | None = None


def _advance(
    steps: Sequence[RemediationStep],
    start: int,
    notes: tuple[str, ...],
    node: NodeView,
    cordoned: bool,
    can_reboot: bool,
    now: datetime,
    finished: str | None,
) -> Decision:
    """Move to the first step from ``start`` that can run; a reboot step the provider
    cannot carry out, or one for a node that is Ready, is skipped (and noted): only a node
    that is not Ready, whose pods already count as unavailable, is rebooted."""
    skipped: list[str] = []
    for index in range(start, len(steps)):
        step = steps[index]
        if step.reboot is not None and (not can_reboot or node.ready):
            line = (
                "reboot skipped: the node's provider cannot reboot"
                if not can_reboot
                # A Ready node's pods still serve: a reboot would take them down outside
                # their PodDisruptionBudgets, where replace drains them through evictions.
                else "reboot skipped: the node is Ready and its pods still serve"
            )
            skipped.append(f"step {index + 1}/{len(steps)}: {line}")
            notes = (*notes, line)
            continue
        cordon = step.reboot is not None and not node.unschedulable and not cordoned
        record = Record(index, step.kind, now, cordoned or cordon, notes[-NOTES_KEPT:])
        recheck = now + parse_duration(step.reboot.timeout) if step.reboot is not None else None
        return Decision(
            "start",
            record.describe(len(steps)),
            record=record,
            reboot=step.reboot is not None,
            cordon=cordon,
            skipped=tuple(skipped),
            finished=finished,
            recheck_at=recheck,
        )
    record = Record(len(steps), "exhausted", now, cordoned, notes[-NOTES_KEPT:])
    return Decision(
        "start",
        record.describe(len(steps)),
        record=record,
        skipped=tuple(skipped),
        finished=finished,
    )


def decide(
    policy: TerminationPolicy,
    node: NodeView,
    record: Record | None,
    *,
    can_reboot: bool,
    paused: str | None,
    now: datetime,
) -> Decision:
    """The next move of one node covered by ``policy`` (which has ``remediation``).

    ``record`` is the node's parsed annotation (None: absent or malformed, a fresh
    start); ``paused`` the breaker's verdict where the node is.
    """
    spec = policy.spec.remediation
    if spec is None or node.in_pipeline:
        return Decision("idle")
    steps = spec.steps
    unhealthy = matches_health_rule(policy, node)
    if record is not None and node.ready and not unhealthy:
        return Decision(
            "recovered",
            f"Ready and healthy again after {record.describe(len(steps))}",
            uncordon=record.cordoned,
        )
    if record is None:
        selected = health_candidate(policy, node, now)
        if selected is None:
            return Decision("idle", recheck_at=health_due(policy, node) if unhealthy else None)
        if paused is not None:
            return Decision("hold", paused)
        return _advance(steps, 0, (), node, False, can_reboot, now, None)
    if record.kind != "reboot":
        # replace: the plan admits it within the budgets; exhausted: kept, reported.
        return Decision("wait", record.describe(len(steps)))
    index = min(record.step, len(steps) - 1)
    step = steps[index]
    if step.reboot is None:  # the policy changed under a running reboot: go on from here
        return _advance(steps, index, record.done, node, record.cordoned, can_reboot, now, None)
    timeout = parse_duration(step.reboot.timeout)
    deadline = record.started_at + timeout
    if now < deadline:
        return Decision("wait", record.describe(len(steps)), recheck_at=deadline)
    if paused is not None:
        return Decision("hold", paused)
    line = f"reboot at {format_rfc3339(record.started_at)} did not help within " + (
        format_duration(timeout)
    )
    return _advance(
        steps,
        index + 1,
        (*record.done, line),
        node,
        record.cordoned,
        can_reboot,
        now,
        f"step {index + 1}/{len(steps)}: {line}",
    )


def replace_reason(reason: str, record: Record) -> str:
    """A replaced node's ``molt.dev/reason``: its rule's reason, then what the earlier
    steps did."""
    return "; ".join([reason, *record.done]) if record.done else reason


def refused(
    policy: TerminationPolicy,
    node: NodeView,
    record: Record,
    why: str,
    *,
    can_reboot: bool,
    now: datetime,
) -> Decision:
    """The provider refused the reboot ``record`` was written for: go on to the next step
    at once (waiting out the timeout of a reboot that never happened helps nobody)."""
    spec = policy.spec.remediation
    assert spec is not None
    steps = spec.steps
    line = f"reboot refused: {why}"[:200]
    return _advance(
        steps,
        record.step + 1,
        (*record.done, line),
        node,
        record.cordoned,
        can_reboot,
        now,
        f"step {record.step + 1}/{len(steps)}: {line}",
    )
