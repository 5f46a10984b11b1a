"""The history of a simulated rollout, recorded through the production reconcilers: a bad
template is created, fails and is rolled back, a good one replaces every node, and the
rows say so with each revision labelled by what changed; the timeline draws it."""

from __future__ import annotations

from pathlib import Path

import pytest

from molt.cli.history import row_as_json
from molt.observe.history import HistoryOptions, HistoryQuery, read_history
from molt.observe.timeline import draw_timeline
from molt.sim.runner import Simulation
from molt.sim.scenario import parse_scenario

pytestmark = pytest.mark.unit

SCENARIO = """\
name: history
duration: 8h
seed: 5
controller: {resync: 30s}
cloud: {launchDelay: 60s, launchJitter: 10s, readyDelay: 20s, badImages: [ami-broken]}
fleet:
  - name: workers
    spec:
      provider: aws
      minSize: 4
      maxSize: 6
      replicas: 4
      zones: [zone-a, zone-b]
      template:
        instanceTypes: [m5.xlarge]
        image: ami-v1
        aws: {subnets: {zone-a: subnet-a, zone-b: subnet-b}}
      strategy: {type: RollingReplace, maxSurge: 1, maxUnavailable: 0}
      health: {readyTimeout: 5m, failureThreshold: 50%, window: 30m, capacityCooldown: 3m}
    ages: {youngest: 1h, oldest: 3h}
workloads:
  - name: web
    replicas: 4
    requests: {cpu: 500m, memory: 1Gi}
    pdb: {maxUnavailable: 1}
timeline:
  - at: 1h
    templateChange: {group: workers, template: {image: ami-broken}}
  - at: 3h
    templateChange: {group: workers, template: {image: ami-v2}}
"""


async def test_a_simulated_rollback_and_rollout_leave_their_story(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sim.db"
    sim = Simulation(
        parse_scenario(SCENARIO), HistoryOptions(url=url, cluster="sim", bound=1_000_000)
    )
    sim.run()
    assert sim.history is not None
    assert sim.history.buffered > 0
    await sim.history.stop(grace=60)
    assert sim.history.dropped == 0
    rows = read_history(url, HistoryQuery(cluster="sim", group="workers"))
    group_rows = [(r["reason"], r["change"]) for r in rows if r["kind"] == "InstanceGroup"]
    created = [change for reason, change in group_rows if reason == "RevisionCreated"]
    assert created == ["initial image ami-v1", "image ami-broken", "image ami-v2"], group_rows
    reasons = [reason for reason, _ in group_rows]
    assert "RolledBack" in reasons or "RevisionDegraded" in reasons, group_rows
    # Every node that started the run was replaced, each through the whole pipeline.
    nodes = {r["name"] for r in rows if r["kind"] == "Node" and r["reason"] == "NodeDeleted"}
    assert len(nodes) >= 4
    for node in nodes:
        story = [r["reason"] for r in rows if r["name"] == node]
        assert story.index("Cordoned") < story.index("Drained") < story.index("NodeDeleted")
    # Rows carry the simulated clock, not the wall clock.
    assert rows[0]["time"] >= sim.scenario.start
    assert all(row_as_json(r)["time"] for r in rows)

    fig = draw_timeline(rows)
    ax = fig.axes[0]
    legend = " | ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "image ami-v2" in legend, legend
    assert any((line.get_gid() or "").startswith("rollback:") for line in ax.lines)
    bars = {p.get_gid() for p in ax.patches if p.get_gid()}
    assert nodes <= bars
