"""When each node can next be selected by a policy, remembered between passes.

Selection runs every few seconds to minutes over the whole fleet, but a node no rule
selects now cannot become a candidate before its age reaches the point the policy starts
retiring it, or a condition or taint has been held for the rule's ``for``; drift and
label rules cannot select it at all while the node and its group stay as they are.
``EligibilitySchedule`` remembers the earliest such moment per (policy, node), as
``molt.policy.selection`` computed it with its own functions, so a later pass skips the
node until then without judging it again.

A remembered moment holds only while nothing it was derived from has changed. The node
is checked by identity: the cache hands out a new ``NodeView`` when a node changes, and
any other object than the one remembered means the moment is judged afresh. The node's
``GroupView`` (rebuilt whenever the group's status is written) is compared by value, and
so is the policy's spec (its status is rewritten every pass and selects nothing). A node
is remembered only when no rule selects it, never when it carries an interruption notice
(judged on every pass) or its launch time is malformed (reported on every pass), and not
at all under ``maxAgeSpread`` (a leveled expiry moves as the pool's other nodes come and
go). A rule whose moment depends on other nodes of the group as well must call
``invalidate_group`` when the group's members change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from molt.api.terminationpolicy import TerminationPolicy, TerminationPolicySpec
from molt.policy.snapshot import GroupView, NodeView


@dataclass(frozen=True)
class _Remembered:
    node: NodeView
    group: GroupView | None
    due: datetime | None
    """When the node can first be selected; None: never, as things stand (not covered,
    or no age limit applies)."""


class EligibilitySchedule:
    """Per policy and node, the earliest moment the node can be selected by age."""

    def __init__(self) -> None:
        self._by_policy: dict[str, dict[str, _Remembered]] = {}
        self._specs: dict[str, TerminationPolicySpec] = {}
        self._equal_groups: tuple[GroupView, GroupView] | None = None
        """The last two distinct ``GroupView`` objects found equal: a pass compares the
        same pair for every node of a group (views are immutable, so it stays true)."""

    def begin(self, policy: TerminationPolicy) -> None:
        """Start a pass of ``policy``: if its spec changed, everything remembered for it
        is judged afresh. (Its status changes every pass and selects nothing.)"""
        name, spec = policy.metadata.name, policy.spec
        known = self._specs.get(name)
        if known is spec:
            return
        if known is None or known != spec:
            self._by_policy.pop(name, None)
        self._specs[name] = spec

    def waiting(
        self, policy: TerminationPolicy, node: NodeView, group: GroupView | None, now: datetime
    ) -> bool:
        """True when the node was judged with these very objects (and the policy's spec
        as ``begin`` last saw it) and its moment has not come: selecting it now would
        find nothing."""
        return self.waiting_in(policy)(node, group, now)

    def waiting_in(
        self, policy: TerminationPolicy
    ) -> Callable[[NodeView, GroupView | None, datetime], bool]:
        """``waiting`` for one pass of ``policy`` (after ``begin``), with what is
        remembered for the policy looked up once rather than once per node."""
        remembered = self._by_policy.setdefault(policy.metadata.name, {})
        same_group = self._same_group

        def waiting(node: NodeView, group: GroupView | None, now: datetime) -> bool:
            found = remembered.get(node.name)
            if found is None or found.node is not node:
                return False
            if found.group is not group and not same_group(found.group, group):
                return False
            return found.due is None or now < found.due

        return waiting

    def _same_group(self, known: GroupView | None, group: GroupView | None) -> bool:
        """Whether two views of a group are equal, remembering the last equal pair."""
        pair = self._equal_groups
        if pair is not None and pair[0] is known and pair[1] is group:
            return True
        if known is None or group is None or known != group:
            return False
        self._equal_groups = (known, group)
        return True

    def remember(
        self,
        policy: TerminationPolicy,
        node: NodeView,
        group: GroupView | None,
        due: datetime | None,
    ) -> None:
        """The node, judged now with these objects, cannot be selected before ``due``."""
        self._by_policy.setdefault(policy.metadata.name, {})[node.name] = _Remembered(
            node, group, due
        )

    def forget_absent(self, policy: str, present: int) -> None:
        """Drop what is remembered for nodes that went, once they outnumber those present."""
        remembered = self._by_policy.get(policy)
        if remembered is not None and len(remembered) > 2 * present + 16:
            self._by_policy[policy] = {}

    def invalidate_group(self, group: str) -> None:
        """Judge every node of ``group`` afresh on the next pass."""
        for remembered in self._by_policy.values():
            for name in [n for n, r in remembered.items() if r.node.group == group]:
                del remembered[name]

    def invalidate(self) -> None:
        """Judge every node afresh on the next pass."""
        self._by_policy.clear()
        self._specs.clear()
        self._equal_groups = None
