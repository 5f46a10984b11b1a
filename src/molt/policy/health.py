"""Instance-group health judged per cell: which cells rest, whether a revision is Degraded,
and which NotReady nodes count as failures at all.

A failure in one cell says little about the template: a zone that loses its network, a
rack that loses power, a spot pool that is reclaimed all fail one place. So a cell with a
failure *rests* (its share moves to the other cells, as for a capacity error), and a
revision is Degraded only when more than one of its cells is past the threshold, or its
only cell when the group has just one. A node that goes NotReady counts against its cell
only once it has stayed NotReady for ``notReadyFor``; NotReady that arrives in several
cells (or the whole group) at once is an infrastructure event and counts against nothing.
A node struck by such an event stays excused until it is Ready again: when the event
ends, nodes come back one by one, and the last ones are no less the event's for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from molt.policy.cells import CellKey

MIN_FAILURES_FOR_RATE = 2
"""A percentage threshold needs at least this many failures in a revision: one bad launch
is noise, whatever share of a handful of launches it is."""

BURST_SPAN = timedelta(seconds=30)
"""NotReady transitions this close together arrived "at once"."""


@dataclass(frozen=True)
class CellRecord:
    """One cell's launches and failures within the window (each launch counted once)."""

    failures: int
    launches: int


@dataclass(frozen=True)
class HealthVerdict:
    """What a revision's record means: the cells past the threshold, and Degraded or not."""

    failing: frozenset[CellKey]
    degraded: bool
    why: str


def past_threshold(failures: int, launches: int, threshold: int | str) -> bool:
    """Whether ``failures`` of ``launches`` pass a count or a percentage of the launches."""
    if failures <= 0:
        return False
    if isinstance(threshold, str) and threshold.endswith("%"):
        return failures * 100 >= int(threshold[:-1]) * max(launches, failures, 1)
    return failures >= int(threshold)


def judge_revision(
    cells: Mapping[CellKey, CellRecord], threshold: int | str, group_cells: int
) -> HealthVerdict:
    """Judge one revision from its per-cell record.

    ``group_cells`` is how many cells the group spreads a revision over (zones x capacity
    types). With more than one, a revision is Degraded only when at least two of its cells
    are past the threshold: failures confined to one cell are that cell's business.
    A percentage threshold also needs ``MIN_FAILURES_FOR_RATE`` failures in all.
    """
    failing = frozenset(
        key
        for key, record in cells.items()
        if past_threshold(record.failures, record.launches, threshold)
    )
    failures = sum(r.failures for r in cells.values())
    launches = sum(r.launches for r in cells.values())
    percent = isinstance(threshold, str) and threshold.endswith("%")
    enough = not percent or failures >= MIN_FAILURES_FOR_RATE
    degraded = enough and len(failing) >= min(2, max(group_cells, 1))
    where = ", ".join(str(k) for k in sorted(failing)) or "no cell"
    why = (
        f"{failures} launch failure(s) in {launches} launch(es), past the threshold "
        f"{threshold} in {len(failing)} cell(s) ({where})"
    )
    return HealthVerdict(failing, degraded, why)


@dataclass(frozen=True)
class NotReadyNode:
    """A group node whose Ready condition is not True, and since when."""

    name: str
    cell: CellKey
    since: datetime
    young: bool
    """Launched recently enough that its health is the group's business."""
    revision: str | None = None


@dataclass(frozen=True)
class NotReadyVerdict:
    """Which young NotReady nodes count against their cell, and which are excused."""

    failing: tuple[str, ...]
    excused: tuple[str, ...]
    """Past ``notReadyFor``, but part of a NotReady burst across cells: an infrastructure
    event."""
    struck: frozenset[str] = frozenset()
    """Every NotReady node struck by such a burst so far, past ``notReadyFor`` or not: pass
    it back as ``struck_before`` next time, so the excuse outlasts the burst's end."""


def judge_not_ready(
    nodes: Sequence[NotReadyNode],
    group_size: int,
    now: datetime,
    not_ready_for: timedelta,
    span: timedelta = BURST_SPAN,
    struck_before: frozenset[str] = frozenset(),
) -> NotReadyVerdict:
    """Young nodes NotReady for at least ``not_ready_for`` fail, unless their NotReady
    arrived together (within ``span``) with NotReady in another cell that also struck
    proven nodes (old ones, or another revision's), or struck every node of the group:
    then the cause is the infrastructure, not the cell or the template.

    ``nodes`` are all the group's NotReady nodes, young or not: an old node going NotReady
    with the young ones is what shows the event is not theirs. Young nodes of one revision
    failing together in several cells, with the rest of the group Ready, are the
    template's failure and count. ``struck_before`` are the nodes an earlier verdict found
    struck by a burst (``NotReadyVerdict.struck``): those still NotReady stay excused,
    though the nodes they went down with are Ready again and no longer listed.
    """
    failing: list[str] = []
    excused: list[str] = []
    struck = {node.name for node in nodes if node.name in struck_before}
    for node in sorted(nodes, key=lambda n: n.name):
        together = [other for other in nodes if abs(other.since - node.since) <= span]
        cells = {other.cell for other in together}
        whole_group = group_size > 1 and len(together) >= group_size
        proven = any(not o.young or o.revision != node.revision for o in together)
        if (len(cells) > 1 and proven) or whole_group:
            struck.add(node.name)
        if not node.young or now - node.since < not_ready_for:
            continue
        if node.name in struck:
            excused.append(node.name)
        else:
            failing.append(node.name)
    return NotReadyVerdict(tuple(failing), tuple(excused), frozenset(struck))


def struck_at_once(
    nodes: Sequence[NotReadyNode],
    group_size: int,
    span: timedelta = BURST_SPAN,
    struck_before: frozenset[str] = frozenset(),
) -> frozenset[str]:
    """The NotReady nodes whose NotReady arrived together with NotReady in another cell, or
    with every node of the group: an infrastructure event, not those nodes' own death, so
    nothing is replaced or rerouted for them. Nodes in ``struck_before`` (found struck
    earlier) that are still NotReady stay struck, as in ``judge_not_ready``."""
    struck: set[str] = {node.name for node in nodes if node.name in struck_before}
    for node in nodes:
        together = [other for other in nodes if abs(other.since - node.since) <= span]
        if len({o.cell for o in together}) > 1 or (group_size > 1 and len(together) >= group_size):
            struck.add(node.name)
    return frozenset(struck)


def degraded_backoff(times_degraded: int, window: timedelta, cap: timedelta) -> timedelta:
    """How long a Degraded revision waits before it is tried again: the window, doubling
    with each verdict, at most ``cap``. A revision wrongly judged (a transient event) gets
    another chance; a broken one costs a few launches per retry, less and less often."""
    exponent = max(0, min(times_degraded - 1, 16))
    backoff: timedelta = window * (1 << exponent)
    return min(backoff, cap)
