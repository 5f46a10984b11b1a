"""The leveling schedule of ``maxAgeSpread``: even, never late, stable as nodes come and go."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from molt.policy.leveling import leveled_expiries

DEADLINE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _cliff(count: int) -> list[tuple[datetime, str]]:
    return [(DEADLINE, f"n{i:02}") for i in range(count)]


def test_a_cliff_of_nodes_born_together_leaves_evenly_over_the_spread() -> None:
    planned = leveled_expiries(_cliff(12), 24 * HOUR)

    times = sorted(planned.values())
    assert times[-1] == DEADLINE
    assert times[0] == DEADLINE - 22 * HOUR  # 11 gaps of 24 h / 12
    assert {later - earlier for earlier, later in itertools.pairwise(times)} == {2 * HOUR}


def test_a_fleet_already_even_is_left_alone() -> None:
    even = [(DEADLINE - i * 3 * HOUR, f"n{i}") for i in range(8)]  # 3 h apart, gap 24 h / 8

    assert leveled_expiries(even, 24 * HOUR) == {name: deadline for deadline, name in even}


def test_the_plan_does_not_depend_on_the_order_nodes_are_listed_in() -> None:
    pool = [*_cliff(5), (DEADLINE + 30 * timedelta(minutes=1), "late")]
    shuffled = list(pool)
    random.Random(3).shuffle(shuffled)

    assert leveled_expiries(pool, 10 * HOUR) == leveled_expiries(shuffled, 10 * HOUR)


def test_the_nodes_left_keep_their_plan_when_the_earliest_is_replaced() -> None:
    pool = _cliff(10)
    before = leveled_expiries(pool, 20 * HOUR)
    earliest = min(before, key=lambda name: before[name])
    # Its replacement joins with a deadline a whole max age later; the pool keeps its size.
    after = leveled_expiries(
        [pair for pair in pool if pair[1] != earliest] + [(DEADLINE + 40 * HOUR, "new")],
        20 * HOUR,
    )

    assert {name: after[name] for name in before if name != earliest} == {
        name: when for name, when in before.items() if name != earliest
    }


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=96 * 60), min_size=1, max_size=60),
    spread_minutes=st.integers(min_value=0, max_value=48 * 60),
)
def test_no_plan_is_late_or_a_spread_early_and_plans_are_a_gap_apart(
    offsets: list[int], spread_minutes: int
) -> None:
    spread = timedelta(minutes=spread_minutes)
    pool = [(DEADLINE + timedelta(minutes=m), f"n{i}") for i, m in enumerate(offsets)]
    planned = leveled_expiries(pool, spread)

    gap = spread / len(pool)
    for deadline, name in pool:
        assert planned[name] <= deadline
        assert deadline - planned[name] <= spread
    times = sorted(planned.values())
    for earlier, later in itertools.pairwise(times):
        assert later - earlier >= gap - timedelta(microseconds=1)
