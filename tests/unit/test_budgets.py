"""Budgets bound how many nodes are in flight; a plan never exceeds one."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from molt.api.terminationpolicy import Budget
from molt.api.types import resolve_count_or_percent
from molt.policy.budgets import BudgetLedger, scope_key, window_open
from molt.policy.plan import compute_plan
from molt.policy.selection import Candidate, Urgency, covers
from molt.policy.snapshot import NodeView, Snapshot
from tests.support.fleet import NOW, node, policy


def _admitted(nodes: list[NodeView], **spec: object) -> list[str]:
    plan = compute_plan(Snapshot(tuple(nodes)), [policy(**spec)], NOW)
    return [d.node for d in plan.admitted]


def test_without_budgets_one_node_or_ten_percent_go_whichever_is_larger() -> None:
    small = [node(f"s{i}", age_hours=60 + i) for i in range(5)]
    large = [node(f"l{i}", age_hours=60 + i) for i in range(40)]

    assert len(_admitted(small)) == 1
    assert len(_admitted(large)) == 4


def test_the_oldest_go_first_within_a_budget() -> None:
    fleet = [node("a", age_hours=50), node("b", age_hours=70), node("c", age_hours=60)]

    assert _admitted(fleet, budgets=[{"maxInFlight": 2}]) == ["b", "c"]


def test_nodes_in_flight_use_up_the_budget() -> None:
    fleet = [node("going", age_hours=60, state="draining"), node("next", age_hours=60)]

    plan = compute_plan(Snapshot(tuple(fleet)), [policy(budgets=[{"maxInFlight": 1}])], NOW)

    assert plan.admitted == ()
    assert plan.decisions[0].blocked_by == (
        "budget full: 1/1 in flight in cluster (maxInFlight 1 per Cluster)"
    )


def test_a_zone_budget_counts_each_zone_apart() -> None:
    fleet = [node(f"{z}{i}", age_hours=60 + i, zone=z) for z in ("a", "b") for i in range(4)]

    admitted = _admitted(fleet, budgets=[{"maxInFlight": "25%", "scope": "Zone"}])

    assert sorted(admitted) == ["a3", "b3"]


def test_the_strictest_budget_wins() -> None:
    fleet = [node(f"n{i}", age_hours=60 + i) for i in range(10)]

    admitted = _admitted(
        fleet, budgets=[{"maxInFlight": 5}, {"maxInFlight": "20%", "scope": "InstanceGroup"}]
    )

    assert len(admitted) == 2


def test_outside_the_window_only_past_deadline_nodes_go() -> None:
    # NOW is Monday 12:00 UTC; the window opens at 02:00 for 2h, so it is closed.
    window = {"maxInFlight": 5, "schedule": "0 2 * * *", "duration": "2h"}
    fleet = [node("expired", age_hours=50), node("due-soon", age_hours=47.5)]

    plan = compute_plan(Snapshot(tuple(fleet)), [policy(budgets=[window])], NOW)

    assert [d.node for d in plan.admitted] == ["expired"]
    assert plan.decisions[1].blocked_by is not None
    assert "outside the maintenance window" in plan.decisions[1].blocked_by


def test_a_window_honours_its_time_zone() -> None:
    berlin_mornings = Budget(
        max_in_flight=1, schedule="0 9 * * 1-5", duration="8h", time_zone="Europe/Berlin"
    )
    monday_noon_utc = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # 13:00 in Berlin
    monday_6pm_utc = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)  # 18:00 in Berlin
    saturday = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

    assert window_open(berlin_mornings, monday_noon_utc)
    assert not window_open(berlin_mornings, monday_6pm_utc)
    assert not window_open(berlin_mornings, saturday)
    assert window_open(berlin_mornings, datetime(2026, 11, 23, 8, 0, tzinfo=UTC))


zones = st.sampled_from(["a", "b", "c"])
groups = st.sampled_from(["workers", "data"])
budget_specs = st.lists(
    st.fixed_dictionaries(
        {
            "maxInFlight": st.one_of(st.integers(0, 6), st.integers(0, 100).map(lambda p: f"{p}%")),
            "scope": st.sampled_from(["Cluster", "InstanceGroup", "Zone"]),
        }
    ),
    max_size=3,
)
fleets = st.lists(
    st.tuples(st.floats(0, 120), zones, groups, st.booleans()), min_size=0, max_size=60
)


@settings(max_examples=300, deadline=None)
@given(fleet=fleets, budgets=budget_specs)
def test_a_plan_never_exceeds_any_budget(
    fleet: list[tuple[float, str, str, bool]], budgets: list[dict[str, object]]
) -> None:
    nodes = [
        node(f"n{i}", age_hours=age, zone=zone, group=group, state="draining" if flying else None)
        for i, (age, zone, group, flying) in enumerate(fleet)
    ]
    rotate = policy(budgets=budgets)
    plan = compute_plan(Snapshot(tuple(nodes)), [rotate], NOW + timedelta(0))
    admitted = {d.node for d in plan.admitted}

    effective = list(rotate.spec.budgets) or [Budget(max_in_flight="10%")]
    covered = [n for n in nodes if covers(rotate, n)]
    for budget in effective:
        buckets: dict[str, list[NodeView]] = {}
        for n in covered:
            buckets.setdefault(scope_key(budget, n.group, n.zone), []).append(n)
        for members in buckets.values():
            allowed = resolve_count_or_percent(budget.max_in_flight, len(members))
            if not rotate.spec.budgets:
                allowed = max(1, allowed)
            before = sum(1 for n in members if n.in_pipeline)
            new = sum(1 for n in members if n.name in admitted)
            # New work only starts while there is room; it never adds past the limit.
            assert new == 0 or before + new <= allowed


def _candidate(name: str, zone: str = "zone-a") -> Candidate:
    return Candidate(
        name,
        "rotate",
        "MaxAge",
        "max-age",
        Urgency.AGED,
        timedelta(hours=50),
        None,
        "workers",
        zone,
    )


def test_a_ledger_answers_anew_once_it_admitted_a_node() -> None:
    fleet = [node(f"n{i}", age_hours=60) for i in range(4)]
    ledger = BudgetLedger([Budget(max_in_flight=1, scope="Zone")], fleet, NOW)

    assert ledger.hold(_candidate("n0")) is None
    ledger.admit(_candidate("n0"))

    held = ledger.hold(_candidate("n1"))
    assert held is not None
    assert held.message == "budget full: 1/1 in flight in zone=zone-a (maxInFlight 1 per Zone)"
    assert ledger.hold(_candidate("n2", zone="zone-b")) is None


def test_a_copied_ledger_admits_apart_from_its_original() -> None:
    fleet = [node(f"n{i}", age_hours=60) for i in range(4)]
    ledger = BudgetLedger([Budget(max_in_flight=1)], fleet, NOW)
    assert ledger.hold(_candidate("n0")) is None

    twin = ledger.copy()
    twin.admit(_candidate("n0"))

    assert twin.hold(_candidate("n1")) is not None
    assert ledger.hold(_candidate("n1")) is None
