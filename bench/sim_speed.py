"""How fast the simulator runs Molt's controller.

Two figures: simulated node-hours per wall second on the built-in demo scenario (60
nodes, 4 days, with a rollback and a zone outage), and the wall time of 2,500 nodes under
a 48 h rotation (30 days is about 37,000 replacements). The large run coarsens the
controller's timing (a selection pass at most every 10 min, a group reconcile at most every
5 min, resync 5 min), which it prints: decisions on a 48 h clock with 2 h of jitter and a
30 min drain lead move by minutes, not hours. ``python -m bench.sim_speed 2500 24`` runs
one day and extrapolates to 30.
"""

from __future__ import annotations

import sys
import time

from molt.cli.logs import configure_logging
from molt.sim.builtin import demo_scenario
from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import Scenario, parse_scenario


def large_fleet(nodes: int = 2500, hours: int = 720) -> Scenario:
    text = f"""
name: fleet-{nodes}
duration: {hours}h
seed: 5
sampleEvery: 1h
controller: {{resync: 5m, selectionInterval: 10m, groupInterval: 5m}}
cloud: {{launchDelay: 90s, launchJitter: 30s, readyDelay: 20s}}
fleet:
  - name: workers
    spec:
      provider: aws
      minSize: {nodes}
      maxSize: {nodes + nodes // 10}
      replicas: {nodes}
      zones: [zone-a, zone-b, zone-c]
      template:
        instanceTypes: [m5.xlarge]
        image: ami-1
        aws: {{subnets: {{zone-a: s-a, zone-b: s-b, zone-c: s-c}}}}
      strategy: {{type: RollingReplace, maxSurge: "2%", maxUnavailable: 0}}
    ages: {{youngest: 0h, oldest: 48h}}
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


def measure(scenario: Scenario) -> dict[str, object]:
    sim = Simulation(scenario)
    started, cpu_started = time.perf_counter(), time.process_time()
    sim.run()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    report = build_report(sim)
    replaced = sum(report["replacedByReason"].values())
    return {
        "wall": wall,
        "cpu": cpu,
        "node_hours": sim.node_hours(),
        "replaced": replaced,
        "reconciles": sim.stats.reconciles,
        "oldest": report["maxNodeAgeHours"],
        "errors": sim.stats.errors,
    }


def run(nodes: int = 2500, hours: int = 720) -> None:
    configure_logging(level="error")
    demo = measure(demo_scenario())
    print(
        f"sim demo (60 nodes, 96 h): {demo['wall']:.1f} s wall, "
        f"{float(demo['node_hours']) / float(demo['wall']):.0f} simulated node-hours per wall "
        f"second, {demo['reconciles']} reconciles"
    )
    big = measure(large_fleet(nodes, hours))
    per_30_days = float(big["wall"]) * 720 / hours
    print(
        f"sim fleet ({nodes} nodes, {hours} h, 48 h rotation): {big['wall']:.1f} s wall "
        f"({big['cpu']:.1f} s CPU), "
        f"30 days {'measured' if hours == 720 else 'extrapolated'}: {per_30_days:.0f} s "
        f"(target 120 s), {big['replaced']} replacements, "
        f"{float(big['node_hours']) / float(big['wall']):.0f} node-hours per wall second, "
        f"oldest node {big['oldest']} h, {big['reconciles']} reconciles, "
        f"{big['errors']} errors; timing: selection every >=10m, group every >=5m"
    )


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:3]]
    run(*arguments)
