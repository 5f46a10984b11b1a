"""The fleet summary behind `molt status`: pipeline steps, blocked lines, expiries."""

from __future__ import annotations

from datetime import timedelta

import pytest

from molt.policy.fleet_status import fleet_status, sparkline
from molt.policy.snapshot import Snapshot
from tests.support.fleet import NOW, node, policy

pytestmark = pytest.mark.unit


def test_expiries_fall_into_the_hour_they_come_due_and_overdue_ones_are_counted() -> None:
    nodes = (
        node("due-now", age_hours=50),
        node("in-2h", age_hours=45.5),  # start at 47 h (1 h lead): due in 1 h 30 m
        node("in-20h", age_hours=27),
        node("later", age_hours=1),
        node("flying", age_hours=60, state="draining"),
    )
    status = fleet_status(Snapshot(nodes), [policy()], {}, NOW)
    assert status.overdue == 1
    assert status.expiries[1] == 1
    assert status.expiries[20] == 1
    assert sum(status.expiries) == 2
    assert status.in_flight["draining"] == ["flying"]


def test_a_node_no_policy_covers_never_comes_due() -> None:
    status = fleet_status(Snapshot((node("free", age_hours=100),)), [], {}, NOW)
    assert status.overdue == 0
    assert sum(status.expiries) == 0


def test_the_sparkline_scales_to_the_busiest_hour() -> None:
    assert sparkline([0, 1, 4, 2]) == " ▃█▅"
    assert sparkline([0, 0]) == "▁▁"


def test_a_node_due_within_the_hour_counts_in_the_first_column() -> None:
    soon = node("soon", age_hours=46.5)  # 47 h start (48 h less a 1 h lead): in 30 min
    status = fleet_status(Snapshot((soon,)), [policy()], {}, NOW)
    assert status.expiries[0] == 1
    later = fleet_status(Snapshot((soon,)), [policy()], {}, NOW - timedelta(hours=1))
    assert later.expiries[1] == 1
