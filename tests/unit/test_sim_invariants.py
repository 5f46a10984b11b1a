"""Random simulated fleets, each run for days through the production controller, with
invariants.

The default run draws up to ``MOLT_SIM_FLEETS`` fleets (20 unless set) from seeds
``MOLT_SIM_SEED`` onwards (0 unless set), and stops starting new ones once
``MOLT_SIM_TIME_CAP`` seconds (45 unless set; 0: no cap) would be passed; ``make chaos``
runs 1000 without a cap. A failing seed replays with
``MOLT_SIM_SEED=<seed> MOLT_SIM_FLEETS=1``. Each fleet runs two to four simulated days.
The invariants (``tests.support.sim_invariants``): no node admitted above its policy's
budget, no control-plane node selected by a policy that does not opt in, no node deleted
before it was drained, every node past its max age selected by the next selection pass
unless something legitimate holds it, no effective deadline past the hard max age,
selection passes at the promised cadence, no revision rolled back that failed in one cell
only, no PDB broken by an eviction, no controller error. The run prints the seeds and
each invariant's checks and violations.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import structlog
import yaml

from molt.api.labels import SELECTED, STATE_LABEL
from molt.sim.cluster import RecordedEvent
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario
from tests.support import sim_invariants
from tests.support.sim_fleets import random_scenario, random_scenario_data
from tests.support.sim_invariants import INVARIANTS, InvariantMonitor, Tally

FLEETS = int(os.environ.get("MOLT_SIM_FLEETS", "20"))
FIRST_SEED = int(os.environ.get("MOLT_SIM_SEED", "0"))
TIME_CAP = float(os.environ.get("MOLT_SIM_TIME_CAP", "45"))
MIN_FLEETS = 2
"""Fleets run whatever the cap says (fewer only when ``MOLT_SIM_FLEETS`` asks)."""


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """The controller's info logs cost a third of a run's time; errors are counted anyway."""
    before = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    yield
    structlog.configure(**before)


def run_fleet(seed: int) -> tuple[list[str], InvariantMonitor]:
    sim = Simulation(parse_scenario(random_scenario(seed), f"<random fleet {seed}>"))
    monitor = InvariantMonitor(sim)
    sim.run(steps=20)
    return monitor.check(), monitor


def test_random_fleets_over_days_keep_every_invariant() -> None:
    started = time.perf_counter()
    failed: dict[int, list[str]] = {}
    totals = {name: Tally() for name in INVARIANTS}
    waits: dict[str, int] = {}
    single_cell = 0
    simulated_hours = 0.0
    seeds: list[int] = []
    for seed in range(FIRST_SEED, FIRST_SEED + FLEETS):
        elapsed = time.perf_counter() - started
        if TIME_CAP and len(seeds) >= MIN_FLEETS:
            per_fleet = elapsed / len(seeds)
            if elapsed + per_fleet > TIME_CAP:
                break
        violations, monitor = run_fleet(seed)
        seeds.append(seed)
        simulated_hours += monitor.sim.clock.seconds / 3600
        for name, tally in monitor.counts.items():
            totals[name].add(tally)
        for reason, count in monitor.waits.items():
            waits[reason] = waits.get(reason, 0) + count
        single_cell += monitor.single_cell_failures
        if violations:
            failed[seed] = violations[:5]
    print(
        f"\nsimulated fleets: {len(seeds)} seeds ({_ranges(seeds)}), "
        f"{simulated_hours / 24:.1f} simulated days, {len(failed)} with violations, "
        f"{time.perf_counter() - started:.1f}s"
    )
    for name, tally in totals.items():
        print(f"  {name:22} checked {tally.checked:8}  violated {tally.violated}")
    print(f"  due nodes left waiting, by what held them: {dict(sorted(waits.items()))}")
    print(f"  revisions that failed in one cell only and were not rolled back: {single_cell}")
    assert not failed, "replay with MOLT_SIM_SEED=<seed> MOLT_SIM_FLEETS=1: " + repr(failed)
    for name in ("budget", "drainedBeforeDeletion", "maxAgeSelected", "deadlineWithinMaxAge"):
        assert totals[name].checked > 0, f"the {name} invariant checked nothing"
    assert simulated_hours >= 48 * len(seeds), "every fleet runs at least two days"


def _ranges(seeds: list[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if seeds else "none"


def test_a_random_fleet_runs_two_to_four_days() -> None:
    for seed in range(5):
        hours = int(random_scenario_data(seed)["duration"].removesuffix("m")) / 60
        assert 48 <= hours <= 96, (seed, hours)


def _small_old_fleet(minutes: int = 20, **policy: Any) -> Simulation:
    """A random fleet's first group in two zones, every node past its max age, no faults,
    run briefly."""
    data = random_scenario_data(2)
    data["duration"] = f"{minutes}m"
    data["timeline"] = []
    data["fleet"] = data["fleet"][:1]
    group = data["fleet"][0]["spec"]
    group["zones"] = ["zone-a", "zone-b"]
    group.pop("capacity", None)
    data["workloads"] = []
    data.pop("pdbs", None)
    spec = data["policies"][0]["spec"]
    spec.update(policy)
    max_hours = int(spec["rules"]["maxAge"].removesuffix("h"))
    data["fleet"][0]["ages"] = {"youngest": f"{2 * max_hours}h", "oldest": f"{3 * max_hours}h"}
    return Simulation(parse_scenario(yaml.safe_dump(data, sort_keys=False)))


def test_the_monitor_catches_a_due_node_a_pass_did_not_select() -> None:
    """A controller whose selection writes never land leaves due nodes out of the pipeline
    with room in the budget: the max-age invariant names them."""
    sim = _small_old_fleet(budgets=[{"maxInFlight": "100%"}])
    monitor = InvariantMonitor(sim)
    patch_node = sim.cluster.patch_node

    async def refusing(name: str, **changes: Any) -> bool:
        if (changes.get("labels") or {}).get(STATE_LABEL) == SELECTED:
            return False
        return await patch_node(name, **changes)

    sim.cluster.patch_node = refusing  # type: ignore[method-assign]
    sim.run(steps=2)
    assert any("[maxAgeSelected]" in v for v in monitor.check())


def test_the_monitor_lets_due_nodes_wait_on_a_full_budget() -> None:
    """The same fleet with one node in flight at a time: the rest wait, legitimately."""
    sim = _small_old_fleet(budgets=[{"maxInFlight": 1}])
    monitor = InvariantMonitor(sim)
    sim.run(steps=2)
    assert not [v for v in monitor.check() if "[maxAgeSelected]" in v]
    assert monitor.waits.get("budgetFull", 0) > 0


def test_the_monitor_catches_an_effective_deadline_past_the_hard_max_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def late(*args: Any) -> datetime:
        return datetime(2999, 1, 1).astimezone() + timedelta(days=1)

    monkeypatch.setattr(sim_invariants, "max_age_due", late)
    sim = _small_old_fleet(minutes=2)
    monitor = InvariantMonitor(sim)
    sim.run(steps=1)
    assert any("[deadlineWithinMaxAge]" in v for v in monitor.check())


def test_the_monitor_catches_a_rollback_of_a_revision_failing_in_one_cell() -> None:
    """A RevisionDegraded for a revision whose only failures were in one cell of a
    multi-zone group is reported; the same with failures in two cells is not."""
    sim = _small_old_fleet(minutes=2)
    monitor = InvariantMonitor(sim)
    sim.run(steps=1)
    message = "revision abc123 is degraded: failures; rolling back to revision v1"
    sim.cluster.recorded.append(RecordedEvent(60.0, "ig/pool0", "RevisionDegraded", message, True))
    sim.cloud.log.append((30.0, "launch-failed", "pool0/abc123/zone-a/on-demand: InternalError"))
    sim.cloud.log.append(
        (35.0, "launch-failed", "pool0/abc123/zone-b/on-demand: InsufficientInstanceCapacity")
    )
    assert [v for v in monitor.check() if "[rollbackSpansCells]" in v]
    monitor.violations.clear()
    sim.cloud.log.append((40.0, "launch-failed", "pool0/abc123/zone-b/on-demand: InternalError"))
    assert not [v for v in monitor.check() if "[rollbackSpansCells]" in v]


def test_the_monitor_catches_a_node_deleted_before_its_drain() -> None:
    """The drain invariant can fail: deleting a node that still runs pods is reported."""
    sim = Simulation(parse_scenario(random_scenario(2)))
    monitor = InvariantMonitor(sim)
    busy = next(n for n in sim.cluster.sim_nodes() if n.pods)
    asyncio.run(sim.cluster.delete_node(busy.view.name))
    assert any("deleted with pods" in v for v in monitor.check())


@pytest.mark.parametrize("seed", [0, 7])
def test_a_seed_draws_the_same_scenario_every_time(seed: int) -> None:
    assert random_scenario(seed) == random_scenario(seed)
    assert random_scenario(seed) != random_scenario(seed + 1)
