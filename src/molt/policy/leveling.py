"""Even churn: a leveling schedule that spreads a pool's expiries over ``maxAgeSpread``.

After a fleet-wide replacement every node of a group has nearly the same hard deadline
(launch + max age), so one generation later they would all be replaced in the same few
hours. With ``rules.maxAgeSpread`` a policy plans each node's expiry instead:

* a *pool* is the nodes one policy covers in one InstanceGroup (nodes outside any group
  form one pool per policy); nodes already in the pipeline stay in it, so the pool's
  size, and with it the plan, does not change while a node is being replaced;
* the pool is sorted by hard deadline, latest first (ties by name, so the order is the
  same on every pass), and the latest node keeps its deadline;
* each next node's planned expiry is its own deadline, or ``spread / n`` before the
  previous node's planned expiry, whichever is earlier.

A cliff of ``n`` nodes born together therefore leaves one every ``spread / n`` over
``[maxAge - spread, maxAge]``; nodes already at least ``spread / n`` apart are left
alone; no planned expiry is ever later than the node's hard deadline, and none is more
than ``spread`` earlier. The plan depends only on the pool's launch times, so it is the
same on every pass until a node joins or leaves; then only the nodes chained to it (each
planned one gap before the next) move, by about a gap at most. The schedule is a pure
function, a sort and one walk over the pool, recomputed on every pass (``bench/churn.py``
times a selection pass at 10,000 nodes with it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta


def leveled_expiries(
    deadlines: Iterable[tuple[datetime, str]], spread: timedelta
) -> Mapping[str, datetime]:
    """Each node's planned expiry: at or before its hard deadline, less than ``spread``
    before it, consecutive expiries at least ``spread / n`` apart where deadlines allow."""
    pool = tuple(deadlines)
    if not pool or spread <= timedelta(0):
        return {name: deadline for deadline, name in pool}
    gap = spread / len(pool)
    planned: dict[str, datetime] = {}
    previous: datetime | None = None
    for deadline, name in sorted(pool, key=lambda pair: (-pair[0].timestamp(), pair[1])):
        expiry = deadline if previous is None else min(deadline, previous - gap)
        planned[name] = expiry
        previous = expiry
    return planned
