"""Scenario files: a malformed one is refused whole, naming the line and the field."""

from __future__ import annotations

import pytest

from molt.sim.builtin import demo_scenario
from molt.sim.scenario import ScenarioError, parse_scenario

pytestmark = pytest.mark.unit

GOOD = """\
duration: 24h
fleet:
  - name: workers
    spec:
      provider: kwok
      minSize: 3
      maxSize: 4
      zones: [a, b, c]
      template: {instanceTypes: [m5.large]}
workloads:
  - name: web
    replicas: 3
    pdb: {maxUnavailable: 1}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "s.yaml")
    return caught.value.problems


def test_a_good_scenario_loads() -> None:
    scenario = parse_scenario(GOOD)
    assert scenario.duration_seconds == 24 * 3600
    assert scenario.fleet[0].spec.desired_replicas == 3


def test_a_bad_duration_names_its_line_and_field() -> None:
    found = problems(GOOD.replace("duration: 24h", "duration: 24 hours"))
    assert len(found) == 1
    assert found[0].startswith("s.yaml:1: duration:")


def test_a_bad_nested_field_names_its_line_and_path() -> None:
    found = problems(GOOD.replace("maxSize: 4", "maxSize: many"))
    assert found[0].startswith("s.yaml:7: fleet[0].spec.maxSize:")


def test_an_unknown_field_is_named() -> None:
    found = problems(GOOD.replace("    replicas: 3\n", "    replicas: 3\n    replicaz: 4\n"))
    assert found[0].startswith("s.yaml:13: workloads[0].replicaz:")


def test_a_pdb_with_both_bounds_is_refused() -> None:
    found = problems(GOOD.replace("{maxUnavailable: 1}", "{maxUnavailable: 1, minAvailable: 2}"))
    assert "s.yaml:13: workloads[0].pdb" in found[0]
    assert "exactly one" in found[0]


def test_broken_yaml_names_its_line() -> None:
    found = problems(GOOD.replace("replicas: 3", "replicas: [3"))
    assert found[0].startswith("s.yaml:13: not valid YAML")


def test_the_built_in_demo_is_valid() -> None:
    assert demo_scenario().fleet[0].spec.desired_replicas == 54
