"""How fast the simulator runs Molt's controller, against the goals of "fast at fleet scale".

Figures, each printed with its goal:

- simulated node-hours per wall second on the built-in demo scenario (60 nodes, 4 days,
  with a rollback and a zone outage);
- the wall time of 2,500 nodes under a 48 h rotation for 30 days (about 37,000
  replacements), goal under 60 s;
- the wall time of 10,000 nodes for 7 days, goal under 120 s;
- fidelity of the coarsened timing: the large runs space the controller's passes (a
  selection pass at most every 5 min, a group reconcile at most every 2 min, resync
  5 min); a one-day run of the same fleet at production timing must give the same
  replacements within 1 % and the same oldest node within 10 min.

``python -m bench.sim_speed 2500 24`` runs one day of each fleet and extrapolates (said
so beside the figure); ``python -m bench.sim_speed 2500 720`` measures the full 30 days
(and 7 days of the 10,000 nodes). A third argument sizes the fidelity fleet (default
500, see ``FIDELITY_NODES``). CPU seconds are printed beside wall seconds: on a shared
machine they are the steadier figure.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from molt.cli.logs import configure_logging
from molt.sim.builtin import demo_scenario
from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import Scenario, parse_scenario

COARSE_TIMING = "{resync: 5m, selectionInterval: 5m, groupInterval: 2m}"
"""Passes spaced out for speed, but within the fidelity goal: with a group reconcile only
every 5 min (and selection every 10 min) the oldest node of a day grew 10.2 min older
than at production timing (48.20 h against 48.03 h, 500 nodes); at these it is 6 min."""
PRODUCTION_TIMING = "{}"
"""The controller's own defaults: resync 30 s, selection debounced by 1 s, a group every
few seconds while busy."""
FLEET_GOAL_SECONDS = 60.0
"""2,500 nodes for 30 days."""
BIG_FLEET_NODES = 10_000
BIG_FLEET_GOAL_SECONDS = 120.0
"""10,000 nodes for 7 days."""
FIDELITY_NODES = 500
"""The fleet of the fidelity check: a day at production timing (a group reconcile every
few seconds while busy) costs about 7 min of CPU at 500 nodes and grows with the fleet."""
REPLACEMENTS_TOLERANCE = 0.01
OLDEST_TOLERANCE_HOURS = 10 / 60


GROUP_NODES = 5000
"""Nodes per instance group at most (a group's maxSize is bounded at 10,000, and the
fleet keeps 10 % of headroom above its size): a larger fleet is several such groups."""


def large_fleet(nodes: int = 2500, hours: int = 720, timing: str = COARSE_TIMING) -> Scenario:
    groups = -(-nodes // GROUP_NODES)
    size = nodes // groups
    fleet = "".join(
        f"""
  - name: {"workers" if groups == 1 else f"workers-{index}"}
    spec:
      provider: aws
      minSize: {size}
      maxSize: {size + size // 10}
      replicas: {size}
      zones: [zone-a, zone-b, zone-c]
      template:
        instanceTypes: [m5.xlarge]
        image: ami-1
        aws: {{subnets: {{zone-a: s-a, zone-b: s-b, zone-c: s-c}}}}
      strategy: {{type: RollingReplace, maxSurge: "2%", maxUnavailable: 0}}
    ages: {{youngest: 0h, oldest: 48h}}"""
        for index in range(groups)
    )
    text = f"""
name: fleet-{nodes}
duration: {hours}h
seed: 5
sampleEvery: 1h
controller: {timing}
cloud: {{launchDelay: 90s, launchJitter: 30s, readyDelay: 20s}}
fleet:{fleet}
workloads:
  - name: web
    replicas: {nodes * 2}
    requests: {{cpu: "1", memory: 2Gi}}
    pdb: {{maxUnavailable: 5%}}
  - name: api
    replicas: {nodes}
    requests: {{cpu: 500m, memory: 1Gi}}
    pdb: {{minAvailable: 95%}}
policies:
  - name: rotate-48h
    spec:
      rules: {{maxAge: 48h, maxAgeJitter: 2h}}
      budgets: [{{maxInFlight: "2%"}}]
      drain: {{timeout: 30m}}
"""
    return parse_scenario(text, "<bench fleet>")


@dataclass(frozen=True)
class Figures:
    """What one simulation run measured."""

    wall: float
    cpu: float
    node_hours: float
    replaced: int
    reconciles: int
    oldest: float
    """The oldest any node grew, in hours."""
    errors: int


def measure(scenario: Scenario) -> Figures:
    sim = Simulation(scenario)
    started, cpu_started = time.perf_counter(), time.process_time()
    sim.run()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    report = build_report(sim)
    return Figures(
        wall=wall,
        cpu=cpu,
        node_hours=sim.node_hours(),
        replaced=sum(report["replacedByReason"].values()),
        reconciles=sim.stats.reconciles,
        oldest=float(report["maxNodeAgeHours"]),
        errors=sim.stats.errors,
    )


def _fleet_line(label: str, figures: Figures, hours: int, goal_hours: int) -> str:
    """One fleet run, with its figure scaled to the goal's duration."""
    wall, cpu = figures.wall, figures.cpu
    scale = goal_hours / hours
    how = "measured" if hours == goal_hours else f"extrapolated from {hours} h"
    return (
        f"{label}: {wall * scale:.0f} s wall ({cpu * scale:.0f} s CPU), {how}; "
        f"{figures.replaced} replacements in {hours} h, oldest node {figures.oldest} h, "
        f"{figures.reconciles} reconciles, {figures.errors} errors"
    )


def fidelity(nodes: int, coarse: Figures | None = None) -> None:
    """One day of the fleet at production timing and at the coarsened timing (``coarse``:
    that day, when already run)."""
    fine = measure(large_fleet(nodes, 24, PRODUCTION_TIMING))
    coarse = coarse or measure(large_fleet(nodes, 24, COARSE_TIMING))
    fine_replaced, coarse_replaced = fine.replaced, coarse.replaced
    fine_oldest, coarse_oldest = fine.oldest, coarse.oldest
    replaced_off = abs(fine_replaced - coarse_replaced) / max(fine_replaced, 1)
    oldest_off = abs(fine_oldest - coarse_oldest)
    agree = replaced_off <= REPLACEMENTS_TOLERANCE and oldest_off <= OLDEST_TOLERANCE_HOURS
    print(
        f"sim fidelity ({nodes} nodes, 24 h): production timing {fine_replaced} replacements, "
        f"oldest {fine_oldest:.2f} h ({fine.wall:.0f} s wall); coarsened "
        f"{coarse_replaced} replacements, oldest {coarse_oldest:.2f} h; off by "
        f"{replaced_off:.1%} (goal <= 1 %) and {oldest_off * 60:.1f} min (goal <= 10 min): "
        f"{'agree' if agree else 'DO NOT AGREE: the coarsened timing is not fit for the figures'}"
    )


def run(nodes: int = 2500, hours: int = 720, fidelity_nodes: int = FIDELITY_NODES) -> None:
    configure_logging(level="error")
    demo = measure(demo_scenario())
    print(
        f"sim demo (60 nodes, 96 h): {demo.wall:.1f} s wall ({demo.cpu:.1f} s CPU), "
        f"{demo.node_hours / demo.wall:.0f} simulated node-hours per wall second "
        f"(no goal of its own), "
        f"{demo.reconciles} reconciles"
    )
    fleet = measure(large_fleet(nodes, hours))
    print(
        _fleet_line(f"sim fleet ({nodes} nodes, 30 days, 48 h rotation)", fleet, hours, 720)
        + f" (goal < {FLEET_GOAL_SECONDS:.0f} s)"
    )
    big_nodes, big_hours = BIG_FLEET_NODES, min(hours, 168)
    big = measure(large_fleet(big_nodes, big_hours))
    print(
        _fleet_line(f"sim fleet ({big_nodes} nodes, 7 days, 48 h rotation)", big, big_hours, 168)
        + f" (goal < {BIG_FLEET_GOAL_SECONDS:.0f} s)"
    )
    print(f"timing of the fleet runs: {COARSE_TIMING}")
    fidelity(fidelity_nodes, fleet if (nodes, hours) == (fidelity_nodes, 24) else None)


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:4]]
    run(*arguments)
