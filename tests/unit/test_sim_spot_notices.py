"""Spot notices in the simulator: each reclaim is announced two minutes ahead on the
interruption queue, Molt's own interruption controller selects the node with the notice's
deadline, and the node is drained and terminated before the instance goes."""

from __future__ import annotations

import pytest

from molt.sim.report import build_report
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

pytestmark = pytest.mark.unit

SCENARIO = """\
name: spot
duration: 6h
seed: 5
cloud: {{launchDelay: 20s, readyDelay: 5s}}
fleet:
  - name: workers
    spec:
      provider: aws
      minSize: 6
      maxSize: 9
      replicas: 6
      zones: [zone-a, zone-b]
      capacity: {{types: [on-demand, spot], onDemandBase: 0, spotPercent: 100}}
      template:
        instanceTypes: [m5.large]
        image: ami-1
        aws: {{subnets: {{zone-a: subnet-a, zone-b: subnet-b}}}}
    ages: {{youngest: 1h, oldest: 2h}}
workloads:
  - name: web
    replicas: 12
    requests: {{cpu: 100m, memory: 128Mi}}
    pdb: {{maxUnavailable: 2}}
timeline:
  - at: 10m
    spotInterruptions: {{perHour: 2, until: 5h, notices: {notices}}}
"""


def _run(notices: bool) -> dict[str, object]:
    sim = Simulation(parse_scenario(SCENARIO.format(notices=str(notices).lower())))
    sim.run()
    return build_report(sim)


def test_noticed_spot_nodes_are_drained_before_the_reclaim() -> None:
    report = _run(notices=True)
    cloud = report["cloud"]
    assert isinstance(cloud, dict)
    assert cloud["spotNotices"] >= 5, cloud
    assert cloud["spotInterruptions"] == cloud["spotNotices"], "every notice ends in a reclaim"
    assert cloud["spotDrainedInTime"] == cloud["spotNotices"], cloud
    assert report["podsLostWithNodes"] == 0
    replaced = report["replacedByReason"]
    assert isinstance(replaced, dict)
    assert replaced.get("spot interruption") == cloud["spotNotices"], replaced


def test_unwarned_reclaims_take_their_pods_with_them() -> None:
    report = _run(notices=False)
    cloud = report["cloud"]
    assert isinstance(cloud, dict)
    assert cloud["spotNotices"] == 0
    assert cloud["spotInterruptions"] >= 5, cloud
    assert cloud["spotDrainedInTime"] == 0
    assert report["podsLostWithNodes"] > 0
