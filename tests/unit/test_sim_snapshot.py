"""``molt snapshot`` output is a scenario ``molt simulate`` accepts, with no pod specs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from molt.cli.snapshot import _groups, _pdbs, _policies, _workloads
from molt.sim.scenario import parse_scenario

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def node(name: str, zone: str, created: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": {"topology.kubernetes.io/zone": zone},
        }
    }


def test_a_snapshot_round_trips_into_a_scenario_without_secrets() -> None:
    deployment = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "image": "registry/secret-image",
                            "env": [{"name": "TOKEN", "value": "hunter2"}],
                            "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}},
                        }
                    ]
                }
            },
        },
    }
    pdb = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": 1},
    }
    scenario = {
        "duration": "24h",
        "fleet": _groups(
            [node("a", "z1", "2026-01-04T00:00:00Z"), node("b", "z2", "2026-01-05T00:00:00Z")],
            [],
            NOW,
        ),
        "workloads": _workloads([deployment]),
        "pdbs": _pdbs([pdb]),
        "policies": _policies([]),
    }
    text = yaml.safe_dump(scenario)
    assert "hunter2" not in text
    assert "secret-image" not in text
    parsed = parse_scenario(text)
    assert parsed.fleet[0].node_ages()[0].total_seconds() == 36 * 3600
    assert parsed.workloads[0].requests.cpu == "250m"
    assert parsed.pdbs[0].max_unavailable == 1
