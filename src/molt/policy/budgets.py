"""Disruption budgets: how many nodes may be in the pipeline at once.

Each budget bounds the nodes in flight within its scope (the cluster, one instance group,
one zone) to a count or a percentage of the nodes the policy covers there. The strictest
applicable budget wins. A budget with a maintenance window admits only past-deadline and
unhealthy nodes while the window is closed. With no budgets, a policy gets one node or
10 % of what it covers, whichever is larger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from copy import copy as shallow_copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from zoneinfo import ZoneInfo

from croniter import croniter

from molt.api.durations import parse_duration
from molt.api.terminationpolicy import Budget, TerminationPolicy
from molt.api.types import resolve_count_or_percent
from molt.policy.cached import cached
from molt.policy.selection import Candidate, Urgency, covers
from molt.policy.snapshot import NodeView

_SHAPE = attrgetter("group", "zone", "in_pipeline")
DEFAULT_BUDGET = Budget(max_in_flight="10%")
DEFAULT_MINIMUM = 1


def window_open(budget: Budget, now: datetime) -> bool:
    """Whether the budget's maintenance window is open at ``now`` (always, without one)."""
    if budget.schedule is None or budget.duration is None:
        return True
    zone = ZoneInfo(budget.time_zone or "UTC")
    local_now = now.astimezone(zone)
    # The most recent start at or before now (croniter's get_prev skips an exact match).
    last_start: datetime = croniter(budget.schedule, local_now + timedelta(seconds=1)).get_prev(
        datetime
    )
    return local_now < last_start + parse_duration(budget.duration)


def scope_key(budget: Budget, node_group: str | None, node_zone: str | None) -> str:
    """Which bucket of the budget's scope a node falls in."""
    if budget.scope == "InstanceGroup":
        return f"group={node_group or '<none>'}"
    if budget.scope == "Zone":
        return f"zone={node_zone or '<none>'}"
    return "cluster"


@dataclass(frozen=True)
class BudgetLimit:
    """One budget's capacity in one bucket."""

    label: str
    allowed: int


def _describe(budget: Budget) -> str:
    text = f"maxInFlight {budget.max_in_flight} per {budget.scope}"
    if budget.reasons:
        text += f" for {','.join(budget.reasons)}"
    if budget.schedule:
        text += f" in window '{budget.schedule}' for {budget.duration}"
    return text


@dataclass(frozen=True)
class BudgetHold:
    """A budget that holds a candidate back: its window is closed, or it is full."""

    budget: Budget
    scope: str
    in_flight: int
    allowed: int
    window_closed: bool

    @cached
    def message(self) -> str:
        if self.window_closed:
            return f"outside the maintenance window ({_describe(self.budget)})"
        return (
            f"budget full: {self.in_flight}/{self.allowed} in flight in {self.scope} "
            f"({_describe(self.budget)})"
        )


def next_window_opening(budget: Budget, now: datetime) -> datetime | None:
    """When the budget's window opens next (None for a budget without a window)."""
    if budget.schedule is None or budget.duration is None:
        return None
    zone = ZoneInfo(budget.time_zone or "UTC")
    start: datetime = croniter(budget.schedule, now.astimezone(zone)).get_next(datetime)
    return start.astimezone(now.tzinfo)


class BudgetLedger:
    """Counts nodes in flight per budget and bucket; admits candidates while room remains.

    Built from the nodes a policy covers, so percentages resolve against them, and from
    the nodes already in the pipeline, which use up room before any new candidate.
    """

    def __init__(
        self,
        budgets: list[Budget],
        covered: list[NodeView],
        now: datetime,
    ) -> None:
        self.budgets = budgets or [DEFAULT_BUDGET]
        self.uses_default = not budgets
        self.now = now
        self._open = [window_open(b, now) for b in self.budgets]
        self._totals: list[dict[str, int]] = []
        self._in_flight: list[dict[str, int]] = []
        # Nodes counted by what a scope looks at, so each budget adds up a few shapes
        # rather than every node again.
        shapes = Counter(map(_SHAPE, covered))
        for budget in self.budgets:
            totals: dict[str, int] = {}
            flying: dict[str, int] = {}
            for (group, zone, moving), count in shapes.items():
                key = scope_key(budget, group, zone)
                totals[key] = totals.get(key, 0) + count
                if moving:
                    flying[key] = flying.get(key, 0) + count
            self._totals.append(totals)
            self._in_flight.append(flying)
        self._holds: dict[tuple[str, str | None, str | None, bool], BudgetHold | None] = {}
        """What ``hold`` answered per (rule, group, zone, window bypass) since the last
        ``admit``: the answer depends on nothing else, and a plan asks it of thousands of
        candidates that wait in the same few scopes."""

    def copy(self) -> BudgetLedger:
        """A ledger with the same counts that admits apart from this one."""
        twin = shallow_copy(self)
        twin._in_flight = [dict(flying) for flying in self._in_flight]
        twin._holds = {}
        return twin

    def _allowed(self, index: int, key: str) -> int:
        budget = self.budgets[index]
        total = self._totals[index].get(key, 0)
        allowed = resolve_count_or_percent(budget.max_in_flight, total)
        if self.uses_default:
            allowed = max(DEFAULT_MINIMUM, allowed)
        return allowed

    def hold(self, candidate: Candidate) -> BudgetHold | None:
        """The first budget that keeps the candidate from starting now, or None."""
        asked = (candidate.rule, candidate.group, candidate.zone, candidate.bypasses_windows)
        if asked in self._holds:
            return self._holds[asked]
        found = self._hold(candidate)
        self._holds[asked] = found
        return found

    def _hold(self, candidate: Candidate) -> BudgetHold | None:
        for index, budget in enumerate(self.budgets):
            if budget.reasons and candidate.rule not in budget.reasons:
                continue
            key = scope_key(budget, candidate.group, candidate.zone)
            allowed = self._allowed(index, key)
            flying = self._in_flight[index].get(key, 0)
            if not self._open[index] and not candidate.bypasses_windows:
                return BudgetHold(budget, key, flying, allowed, window_closed=True)
            if flying >= allowed:
                return BudgetHold(budget, key, flying, allowed, window_closed=False)
        return None

    def refusal(self, candidate: Candidate) -> str | None:
        """Why the candidate cannot start now, or None if every budget has room."""
        hold = self.hold(candidate)
        return hold.message if hold is not None else None

    def admit(self, candidate: Candidate) -> None:
        """Count the candidate as in flight in every budget that applies to it."""
        for index, budget in enumerate(self.budgets):
            if budget.reasons and candidate.rule not in budget.reasons:
                continue
            key = scope_key(budget, candidate.group, candidate.zone)
            self._in_flight[index][key] = self._in_flight[index].get(key, 0) + 1
        self._holds.clear()


SURPLUS_RULE = "ScaleDown"
"""The rule a group's own surplus removals (scale-down, rebalance) are counted under. No
budget names it in ``reasons``, so only the budgets that bound every reason apply."""


class SurplusBudgets:
    """The policies' budgets, applied to the nodes an instance group removes as surplus.

    A group that shrinks (a scale-down, a borrowed replica given back, a rebalance after a
    zone returns) chooses its nodes itself, but they are still voluntary disruptions of
    nodes the policies cover: each covering policy's budgets that bound every reason must
    have room (and their windows be open), or the node waits. Admitted nodes use up room,
    so one pass never admits more than a budget allows.
    """

    def __init__(
        self, policies: Sequence[TerminationPolicy], nodes: Sequence[NodeView], now: datetime
    ) -> None:
        self.policies = list(policies)
        self.now = now
        self._nodes = nodes
        self._ledgers: dict[str, BudgetLedger] = {}

    def _ledger(self, policy: TerminationPolicy) -> BudgetLedger:
        name = policy.metadata.name
        ledger = self._ledgers.get(name)
        if ledger is None:
            covered = [n for n in self._nodes if covers(policy, n)]
            ledger = self._ledgers[name] = BudgetLedger(
                list(policy.spec.budgets), covered, self.now
            )
        return ledger

    def _candidate(self, policy: TerminationPolicy, node: NodeView, reason: str) -> Candidate:
        return Candidate(
            node=node.name,
            policy=policy.metadata.name,
            rule=SURPLUS_RULE,
            reason=reason,
            urgency=Urgency.LABELLED,
            age=timedelta(0),
            deadline=None,
            group=node.group,
            zone=node.zone,
        )

    def admit(self, node: NodeView, reason: str) -> str | None:
        """Count the node as in flight under every covering policy and return None, or
        return why a policy's budget holds it (counting nothing)."""
        covering = [p for p in self.policies if covers(p, node)]
        for policy in covering:
            hold = self._ledger(policy).hold(self._candidate(policy, node, reason))
            if hold is not None:
                return f"policy {policy.metadata.name}: {hold.message}"
        for policy in covering:
            self._ledger(policy).admit(self._candidate(policy, node, reason))
        return None
