"""The pydantic models refuse what the API server refuses, with the same words."""

from typing import Any

import pytest
from pydantic import ValidationError

from molt.api import InstanceGroup, TerminationPolicy, Watchdog
from molt.api.types import resolve_count_or_percent
from tests.support.builders import instance_group, termination_policy


def test_the_sample_instance_group_parses_with_defaults_filled_in() -> None:
    group = InstanceGroup.model_validate(instance_group())
    assert group.spec.desired_replicas == 6
    assert group.spec.capacity.types == ["on-demand"]
    assert group.spec.health.ready_timeout == "10m"
    assert group.spec.template.kwok is not None
    assert group.spec.template.kwok.boot_delay == "5s"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"minSize": 5, "maxSize": 3, "replicas": 4}, "minSize must not exceed maxSize"),
        ({"replicas": 20}, "replicas must lie between minSize and maxSize"),
        ({"provider": "aws"}, "needs template.image and template.aws"),
        ({"maxNodeAge": "2days"}, "must be a duration"),
        ({"zones": []}, "at least 1 item"),
        ({"capacity": {"spotPercent": 50}}, "needs 'spot' in capacity.types"),
    ],
)
def test_invalid_instance_groups_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        InstanceGroup.model_validate(instance_group(**change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budgets": [{"maxInFlight": "150%"}]}, "percentage from 0% to 100%"),
        ({"budgets": [{"maxInFlight": -1}]}, "must be a count"),
        ({"budgets": [{"maxInFlight": 1, "duration": "8h"}]}, "schedule and duration"),
        (
            {"budgets": [{"maxInFlight": 1, "schedule": "every night at 2", "duration": "8h"}]},
            "'every night at 2' is not a cron expression",
        ),
        (
            {"budgets": [{"maxInFlight": 1, "schedule": "61 2 * * *", "duration": "8h"}]},
            "'61 2 \\* \\* \\*' is not a cron expression",
        ),
        (
            {
                "budgets": [
                    {
                        "maxInFlight": 1,
                        "schedule": "0 2 * * *",
                        "duration": "8h",
                        "timeZone": "Mars/Olympus_Mons",
                    }
                ]
            },
            "'Mars/Olympus_Mons' is not an IANA time zone",
        ),
        (
            {"lifecycle": {"preDrain": [{"name": "x", "timeout": "30s"}]}},
            "exactly one of http, job, etcd or vault",
        ),
        (
            {
                "lifecycle": {
                    "preTerminate": [
                        {
                            "name": "x",
                            "etcd": {"endpoints": ["https://e"], "snapshot": {"dir": "bak"}},
                        }
                    ]
                }
            },
            "should match pattern",
        ),
        (
            {"lifecycle": {"preTerminate": [{"name": "x", "vault": {"address": "https://v"}}]}},
            "tokenSecret",
        ),
        (
            {"lifecycle": {"preDrain": [{"name": "x", "job": {"namespace": "ops"}}]}},
            "exactly one of template or templateConfigMap",
        ),
        ({"lifecycle": {"preDrain": [{"http": {"url": "https://h"}}]}}, "name"),
        (
            {"rules": {"maxAge": "24h", "maxAgeSpread": "36h"}},
            "maxAgeSpread must not exceed maxAge",
        ),
        (
            {"rules": {"maxAge": "48h", "maxAgeJitter": "4h", "maxAgeSpread": "12h"}},
            "maxAgeSpread and maxAgeJitter cannot be set together",
        ),
        ({"rules": {"maxAgeSpread": "12h", "drift": True}}, "maxAgeSpread needs maxAge"),
    ],
)
def test_invalid_termination_policies_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TerminationPolicy.model_validate(termination_policy(**change))


def test_condition_rules_use_the_for_keyword() -> None:
    policy = TerminationPolicy.model_validate(
        termination_policy(
            rules={"conditions": [{"type": "Ready", "status": "False", "for": "5m"}]}
        )
    )
    assert policy.spec.rules.conditions[0].for_ == "5m"


def test_a_watchdog_with_two_checks_is_refused() -> None:
    manifest = {
        "kind": "Watchdog",
        "metadata": {"name": "x"},
        "spec": {"check": {"apiLatency": {}, "http": {"url": "http://127.0.0.1/"}}},
    }
    with pytest.raises(ValidationError, match="exactly one of"):
        Watchdog.model_validate(manifest)


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [(1, 50, 1), ("3", 50, 3), ("10%", 50, 5), ("10%", 5, 1), ("0%", 50, 0), ("100%", 7, 7)],
)
def test_counts_and_percents_resolve_against_a_total(
    value: int | str, total: int, expected: int
) -> None:
    assert resolve_count_or_percent(value, total) == expected


def test_an_etcd_action_is_accepted_with_its_secret_and_snapshot() -> None:
    etcd = {
        "endpoints": ["https://{node.address}:2379"],
        "clientSecret": {"namespace": "kube-system", "name": "etcd-client"},
        "snapshot": {"dir": "/var/backups/etcd"},
    }
    found = TerminationPolicy.model_validate(
        termination_policy(lifecycle={"preTerminate": [{"name": "etcd", "etcd": etcd}]})
    )
    action = found.spec.lifecycle.pre_terminate[0]
    assert action.kind == "etcd"
    assert action.etcd is not None
    assert action.etcd.client_secret is not None
    assert action.etcd.client_secret.name == "etcd-client"


def test_a_window_in_a_real_time_zone_with_a_cron_schedule_is_accepted() -> None:
    budget = {"maxInFlight": 1, "schedule": "0 2 * * mon-fri", "duration": "4h"}
    policy = TerminationPolicy.model_validate(
        termination_policy("nightly", budgets=[{**budget, "timeZone": "Europe/Berlin"}])
    )
    assert policy.spec.budgets[0].time_zone == "Europe/Berlin"
