"""Random simulated fleets, each run through the production controller, with invariants.

The default run draws ``MOLT_SIM_FLEETS`` fleets (20 unless set; ``make chaos`` runs
1000) from seeds ``MOLT_SIM_SEED`` onwards (0 unless set), so a failing seed replays
with ``MOLT_SIM_SEED=<seed> MOLT_SIM_FLEETS=1``. Invariants: no node admitted above its
policy's budget, no control-plane node selected by a policy that does not opt in, no
node deleted before it was drained, no PDB broken by an eviction, no controller error.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario
from tests.support.sim_fleets import random_scenario
from tests.support.sim_invariants import InvariantMonitor

FLEETS = int(os.environ.get("MOLT_SIM_FLEETS", "20"))
FIRST_SEED = int(os.environ.get("MOLT_SIM_SEED", "0"))


def run_fleet(seed: int) -> tuple[list[str], dict[str, int]]:
    sim = Simulation(parse_scenario(random_scenario(seed), f"<random fleet {seed}>"))
    monitor = InvariantMonitor(sim)
    sim.run(steps=20)
    return monitor.check(), monitor.counts


def test_random_fleets_keep_every_invariant() -> None:
    started = time.perf_counter()
    failed: dict[int, list[str]] = {}
    totals: dict[str, int] = {}
    for seed in range(FIRST_SEED, FIRST_SEED + FLEETS):
        violations, counts = run_fleet(seed)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
        if violations:
            failed[seed] = violations[:5]
    print(
        f"\nsimulated fleets: seeds {FIRST_SEED}..{FIRST_SEED + FLEETS - 1}, "
        f"{len(failed)} with violations, checks {totals}, "
        f"{time.perf_counter() - started:.1f}s"
    )
    assert not failed, "replay with MOLT_SIM_SEED=<seed> MOLT_SIM_FLEETS=1: " + repr(failed)
    assert totals["admissions"] > 0, "no policy admission was checked"
    assert totals["deletions"] > 0, "no node deletion was checked"


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
