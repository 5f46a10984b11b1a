"""Rollout speed in the simulator: where the controller itself waits during a rollout.

The same rollout as ``bench.rollout`` (30 nodes, RollingReplace maxSurge 3, a 3 s
launch, no pods) run by the production controller over the simulated cluster, on the
virtual clock. API latency, watch delivery and CPU do not exist there, so what the rollout
takes beyond its waves' launches is the controller's own waits (requeue delays, debounce,
periodic passes) plus the simulated cloud's one-second convergence per launch (an Auto
Scaling group's desired capacity is acted on a moment later; part of a launch, not of
the controller). A timer in the Ready-to-drain or drain-to-launch hand-off shows here as
seconds per wave, without a sandbox.
"""

from __future__ import annotations

import logging
import math

import structlog

from molt.api.instancegroup import Template
from molt.policy.cells import template_revision
from molt.sim.cloud import CloudSettings
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

NODES = 30
SURGE = 3
LAUNCH_SECONDS = 3.0
CHANGE_AT = 300.0
STEP = 0.1
SCENARIO = f"""\
name: rollout
duration: 30m
seed: 7
controller: {{resync: 30s}}
cloud: {{launchDelay: {LAUNCH_SECONDS:g}s, launchJitter: 0s, readyDelay: 0s}}
fleet:
  - name: roll
    spec:
      provider: kwok
      minSize: {NODES}
      maxSize: {NODES + SURGE}
      replicas: {NODES}
      zones: [zone-a, zone-b, zone-c]
      template: {{instanceTypes: [m5.large]}}
      strategy: {{type: RollingReplace, maxSurge: {SURGE}}}
    ages: {{youngest: 1h, oldest: 2h}}
timeline:
  - at: {CHANGE_AT:g}s
    templateChange: {{group: roll, template: {{instanceTypes: [m5.xlarge]}}}}
"""


def rolled_after(limit: float = 1200.0) -> float:
    """Virtual seconds from the template change until every node is Ready at the new
    revision and no old node is left."""
    sim = Simulation(parse_scenario(SCENARIO))
    sim.controller.enqueue_all()
    new = template_revision(Template.model_validate({"instanceTypes": ["m5.xlarge"]}))
    now = CHANGE_AT
    sim.events.run_until(now)
    while now < CHANGE_AT + limit:
        now += STEP
        sim.events.run_until(now)
        nodes = sim.cluster.group_nodes("roll")
        if len(nodes) == NODES and all(n.ready and n.revision == new for n in nodes):
            return now - CHANGE_AT
    raise TimeoutError("the simulated rollout did not finish")


def run() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    rolled = rolled_after()
    waves = math.ceil(NODES / SURGE)
    bound = waves * LAUNCH_SECONDS
    converge = waves * CloudSettings().converge_delay  # the simulated cloud's, once a wave
    waits = max(0.0, rolled - bound - converge) / waves
    print(
        f"simulated rollout of {NODES} nodes, RollingReplace maxSurge {SURGE}: {rolled:.1f}s "
        f"virtual vs lower bound {bound:.0f}s = {rolled / bound:.2f}x (goal <= 1.15x; the "
        f"simulated cloud adds 1s a wave); controller waits {waits:.2f}s a wave (goal 0)"
    )


if __name__ == "__main__":
    run()
