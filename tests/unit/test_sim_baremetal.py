"""Bare metal in the simulator: a fixed pool of hosts per rack, a slow power-on, and a
wipe before a released host can be claimed again; a rack with no free host is out of
capacity, so its share routes to the other rack."""

from __future__ import annotations

import pytest

from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

pytestmark = pytest.mark.unit

POWER_ON, WIPE = 240, 600


def _hosts(rack: str, count: int) -> str:
    return "".join(
        f"\n          - {{name: {rack}-h{i}, zone: {rack}, redfish: {{address: "
        f"'https://bmc.example', systemId: '{rack}-{i}'}}}}"
        for i in range(count)
    )


SCENARIO = f"""\
name: metal
duration: 10h
seed: 2
cloud: {{launchJitter: 0s, readyDelay: 10s, bareMetalPowerOn: {POWER_ON}s,
        bareMetalReprovision: {WIPE}s}}
fleet:
  - name: metal
    spec:
      provider: baremetal
      minSize: 4
      maxSize: 6
      replicas: 4
      zones: [rack-1, rack-2]
      template:
        instanceTypes: [metal]
        image: https://images.example/os.iso
        baremetal:
          credentialsSecret: bmc
          hosts:{_hosts("rack-1", 2)}{_hosts("rack-2", 4)}
      strategy: {{type: RollingReplace, maxSurge: 1, maxUnavailable: 0}}
      health: {{capacityCooldown: 5m}}
    ages: {{youngest: 1h, oldest: 2h}}
policies:
  - name: rotate
    spec:
      rules: {{maxAge: 3h}}
      budgets: [{{maxInFlight: 1}}]
workloads:
  - name: web
    replicas: 8
    requests: {{cpu: 100m, memory: 128Mi}}
    pdb: {{maxUnavailable: 1}}
"""

POOL = {"rack-1": 2, "rack-2": 4}


def test_hosts_are_a_fixed_pool_per_rack_powered_on_slowly_and_wiped_before_reuse() -> None:
    sim = Simulation(parse_scenario(SCENARIO))
    sim.run()
    report = build_report(sim)

    assert report["initialNodesRemaining"] == 0, "every first node was rotated"
    assert report["podsLostWithNodes"] == 0
    lives = list(sim.recorder.lifetimes.values())
    # A host is held from its claim (launch) until its wipe ends.
    for rack, pool in POOL.items():
        edges = []
        for life in lives:
            if life.zone != rack:
                continue
            edges.append((life.launched, 1))
            if life.ended is not None:
                edges.append((life.ended + WIPE, -1))
        held = peak = 0
        for _, step in sorted(edges):
            held += step
            peak = max(peak, held)
        assert peak <= pool, (rack, peak, pool)
    launched = [life for life in lives if not life.initial]
    assert launched
    assert all(life.joined - life.launched >= POWER_ON for life in launched)
    refused = [m for _, kind, m in sim.cloud.log if kind == "launch-failed"]
    assert any("no free host in rack rack-1" in m for m in refused), refused[:3]
