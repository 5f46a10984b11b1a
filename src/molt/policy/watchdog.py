"""The Watchdog state machine: one check result in, the next state and any alert out.

Pure: the caller passes the previous memory (what the Watchdog's status holds), the
check's outcome and ``now``; nothing here reads a clock or sends anything.

- A passing check is ``Healthy``. If the failure it ends had been alerted, a
  ``resolve`` goes out (also while snoozed: it closes an incident already open).
- A failing check for less than ``warmup`` is ``WarmingUp``: a blip pages nobody.
- Past the warm-up it is ``Failing`` and a ``trigger`` goes out, then again only when
  ``cooldown`` has passed since the last alert.
- Past the warm-up while ``snooze_until`` lies ahead it is ``Snoozed``: still checked,
  still failing (a rotation stays paused), but silent. When the snooze ends and it
  still fails, it alerts at once unless an alert went out within the cool-down.

An *episode* is one stretch of failure; it starts at ``failing_since``. Its
``dedup_key`` is the same on trigger and resolve, so PagerDuty closes what it opened.

The node checks (``nodeReadyRatio``, ``nodeCondition``) are judged here too
(``node_verdict``), from the node cache the controller already holds or from the
simulator's nodes: both run the same judgement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from molt.api.terminationpolicy import TerminationPolicy
from molt.api.types import LabelSelector, resolve_count_or_percent
from molt.api.watchdog import Check
from molt.policy.selection import matches_selector
from molt.policy.snapshot import NodeView

State = Literal["Unknown", "Healthy", "WarmingUp", "Failing", "Snoozed"]
STATES: tuple[State, ...] = ("Unknown", "Healthy", "WarmingUp", "Failing", "Snoozed")
AlertEvent = Literal["trigger", "resolve"]


@dataclass(frozen=True)
class Memory:
    """What the state machine remembers between checks (kept in the Watchdog's status)."""

    state: State = "Unknown"
    failing_since: datetime | None = None
    last_alert_time: datetime | None = None


@dataclass(frozen=True)
class Step:
    """The outcome of one check: the new memory, and the alert to send, if any."""

    memory: Memory
    alert: AlertEvent | None = None
    # The failure episode this alert belongs to (also for a resolve, whose new memory
    # has no failing_since any more).
    episode_start: datetime | None = None


def _alerted_in_episode(memory: Memory) -> bool:
    return (
        memory.failing_since is not None
        and memory.last_alert_time is not None
        and memory.last_alert_time >= memory.failing_since
    )


def step(
    memory: Memory,
    ok: bool,
    now: datetime,
    *,
    warmup: timedelta,
    cooldown: timedelta,
    snooze_until: datetime | None = None,
) -> Step:
    """The next state after a check that passed (``ok``) or failed at ``now``."""
    if ok:
        healthy = replace(memory, state="Healthy", failing_since=None)
        if _alerted_in_episode(memory):
            return Step(healthy, "resolve", memory.failing_since)
        return Step(healthy)

    since = memory.failing_since or now
    failing = replace(memory, failing_since=since)
    if now - since < warmup:
        return Step(replace(failing, state="WarmingUp"))
    if snooze_until is not None and now < snooze_until:
        return Step(replace(failing, state="Snoozed"))
    last = failing.last_alert_time
    due = not _alerted_in_episode(failing) or last is None or now - last >= cooldown
    if due:
        return Step(replace(failing, state="Failing", last_alert_time=now), "trigger", since)
    return Step(replace(failing, state="Failing"))


def pauses_rotation(state: str | None) -> bool:
    """Whether a watchdog in ``state`` holds a ``pauseWhen`` policy: failing past warm-up.

    A snoozed watchdog is silent but still failing, so it still holds the rotation.
    """
    return state in ("Failing", "Snoozed")


def holding_watchdog(pause_when: Sequence[str], states: Mapping[str, str | None]) -> str | None:
    """The first watchdog named in a policy's ``pauseWhen`` that holds it now, or None.

    A named watchdog that does not exist (or has no state yet) holds nothing.
    """
    return next((name for name in pause_when if pauses_rotation(states.get(name))), None)


def paused_policies(
    policies: Sequence[TerminationPolicy], states: Mapping[str, str | None]
) -> dict[str, str]:
    """Policy name -> the watchdog that pauses it, for every policy held now."""
    held: dict[str, str] = {}
    for policy in policies:
        names = [p.watchdog for p in policy.spec.pause_when]
        holder = holding_watchdog(names, states)
        if holder is not None:
            held[policy.metadata.name] = holder
    return held


def dedup_key(watchdog: str, episode_start: datetime) -> str:
    """A key stable for one watchdog's one failure episode (trigger and resolve alike)."""
    return f"molt-watchdog/{watchdog}/{episode_start.strftime('%Y%m%dT%H%M%SZ')}"


@dataclass(frozen=True)
class Verdict:
    """A check's outcome: passed or not, and a message saying why."""

    ok: bool
    message: str


def node_ready_ratio(
    nodes: Sequence[NodeView], selector: LabelSelector | None, min_ready: int | str
) -> Verdict:
    """Ready nodes over the selected nodes, overall and in each zone, against ``min_ready``.

    ``min_ready`` is a count or a percentage; a percentage applies to each zone too, a
    count only to the whole (a zone of two cannot hold a count of ten).
    """
    chosen = [n for n in nodes if matches_selector(n.labels, selector)]
    if not chosen:
        return Verdict(False, "no node matches the selector")
    ready = sum(1 for n in chosen if n.ready)
    need = resolve_count_or_percent(min_ready, len(chosen))
    failures = []
    if ready < need:
        failures.append(f"{ready}/{len(chosen)} nodes Ready, below {min_ready}")
    if isinstance(min_ready, str) and min_ready.endswith("%"):
        zones: dict[str, list[NodeView]] = {}
        for node in chosen:
            zones.setdefault(node.zone or "unknown", []).append(node)
        for zone, members in sorted(zones.items()):
            zone_ready = sum(1 for n in members if n.ready)
            if zone_ready < resolve_count_or_percent(min_ready, len(members)):
                failures.append(f"zone {zone}: {zone_ready}/{len(members)} Ready")
    if failures:
        return Verdict(False, "; ".join(failures))
    return Verdict(True, f"{ready}/{len(chosen)} nodes Ready")


def node_condition_count(
    nodes: Sequence[NodeView], selector: LabelSelector | None, condition: str, maximum: int
) -> Verdict:
    """How many selected nodes carry ``condition`` with status True; fails above ``maximum``."""
    carrying = sorted(
        n.name
        for n in nodes
        if matches_selector(n.labels, selector)
        and any(c.type == condition and c.status == "True" for c in n.conditions)
    )
    message = f"{len(carrying)} node(s) with {condition}=True (max {maximum})"
    if carrying:
        shown = ", ".join(carrying[:5]) + (", ..." if len(carrying) > 5 else "")
        message += f": {shown}"
    return Verdict(len(carrying) <= maximum, message)


def node_verdict(check: Check, nodes: Sequence[NodeView]) -> Verdict | None:
    """The verdict of a node check (``nodeReadyRatio``, ``nodeCondition``) over ``nodes``;
    None for a check that needs I/O (``probePod``, ``apiLatency``, ``http``)."""
    if check.node_ready_ratio is not None:
        ratio = check.node_ready_ratio
        return node_ready_ratio(nodes, ratio.node_selector, ratio.min_ready)
    if check.node_condition is not None:
        cond = check.node_condition
        return node_condition_count(nodes, cond.node_selector, cond.type, cond.max)
    return None
