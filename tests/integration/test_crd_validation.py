"""The API server itself refuses invalid Molt resources, naming the field at fault."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

from tests.conftest import RunningSandbox
from tests.support.builders import instance_group, termination_policy


def _apply(sandbox: RunningSandbox, manifest: dict[str, Any]) -> tuple[int, str]:
    result = sandbox.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    return result.returncode, result.stdout + result.stderr


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def test_a_valid_instance_group_is_accepted_and_listed_with_its_columns(
    sandbox: RunningSandbox,
) -> None:
    name = _unique("valid")
    code, output = _apply(sandbox, instance_group(name))
    assert code == 0, output

    listing = sandbox.kubectl("get", "ig", name)
    assert listing.returncode == 0, listing.stderr
    header = listing.stdout.splitlines()[0].split()
    for column in ("STATE", "MIN", "MAX", "CURRENT", "UPDATED", "AGE"):
        assert column in header
    sandbox.kubectl("delete", "ig", name)


@pytest.mark.parametrize(
    ("spec_change", "field", "message"),
    [
        ({"minSize": 5, "maxSize": 3, "replicas": 4}, "spec.minSize", "minSize must not exceed"),
        ({"provider": "gce"}, "spec.provider", 'Unsupported value: "gce"'),
        ({"maxNodeAge": "2days"}, "spec.maxNodeAge", "must be a duration such as"),
        ({"zones": []}, "spec.zones", "should have at least 1 items"),
        ({"minSize": -1}, "spec.minSize", "should be greater than or equal to 0"),
        ({"replicas": 20}, "spec.replicas", "replicas must lie between minSize and maxSize"),
        (
            {"capacity": {"types": ["on-demand", "reserved"]}},
            "spec.capacity.types[1]",
            'Unsupported value: "reserved"',
        ),
        ({"strategy": {"type": "Recreate"}}, "spec.strategy.type", 'Unsupported value: "Recreate"'),
        ({"surprise": True}, "spec.surprise", 'unknown field "spec.surprise"'),
        (
            {
                "provider": "aws",
                "template": {
                    "instanceTypes": ["m5.large"],
                    "image": "ami-1",
                    "aws": {"targetGroups": ["arn:aws:elasticloadbalancing:web"]},
                },
            },
            "spec.template.aws.targetGroups[0]",
            "should match",
        ),
        (
            {
                "lifecycle": {
                    "postLaunch": [
                        {"name": "hep", "manifest": {"kind": "HostEndpoint", "metadata": {}}}
                    ]
                }
            },
            "spec.lifecycle.postLaunch[0].manifest.apiVersion",
            "Required value",
        ),
    ],
    ids=[
        "min-above-max",
        "unknown-provider",
        "malformed-duration",
        "no-zones",
        "negative-size",
        "replicas-out-of-range",
        "unknown-capacity-type",
        "unknown-strategy",
        "unknown-field",
        "not-a-target-group-arn",
        "manifest-without-api-version",
    ],
)
def test_the_api_server_refuses_an_invalid_instance_group(
    sandbox: RunningSandbox, spec_change: dict[str, Any], field: str, message: str
) -> None:
    code, output = _apply(sandbox, instance_group(_unique("bad"), **spec_change))

    assert code != 0, f"accepted: {output}"
    assert field in output, output
    assert message in output, output


def _bare(hosts: list[dict[str, Any]] | None = None, **template: Any) -> dict[str, Any]:
    """A baremetal group over rack-1 and rack-2; ``template`` replaces template fields."""
    host = {
        "name": "r1-h01",
        "zone": "rack-1",
        "redfish": {"address": "https://10.1.0.11", "systemId": "1"},
    }
    body: dict[str, Any] = {
        "instanceTypes": ["metal"],
        "image": "https://images.example/os.iso",
        "baremetal": {"credentialsSecret": "bmc", "hosts": hosts or [host]},
    }
    body.update(template)
    return {"provider": "baremetal", "zones": ["rack-1", "rack-2"], "template": body}


@pytest.mark.parametrize(
    ("spec_change", "field", "message"),
    [
        (_bare(baremetal=None), "spec.template", "needs template.baremetal with its hosts"),
        (_bare(image=None), "spec.template", "boots from virtual media needs template.image"),
        (
            _bare(
                [
                    {
                        "name": "r9-h01",
                        "zone": "rack-9",
                        "redfish": {"address": "https://h", "systemId": "1"},
                    }
                ]
            ),
            "spec.template.baremetal.hosts",
            "every host's zone in template.baremetal.hosts must be in zones",
        ),
        (
            _bare(
                [
                    {
                        "name": "a",
                        "zone": "rack-1",
                        "redfish": {"address": "https://h", "systemId": "1"},
                    },
                    {
                        "name": "a",
                        "zone": "rack-2",
                        "redfish": {"address": "https://i", "systemId": "1"},
                    },
                ]
            ),
            "spec.template.baremetal.hosts[1]",
            "Duplicate value",
        ),
    ],
    ids=["no-baremetal-block", "no-image", "host-outside-the-zones", "host-twice"],
)
def test_the_api_server_refuses_an_invalid_baremetal_group(
    sandbox: RunningSandbox, spec_change: dict[str, Any], field: str, message: str
) -> None:
    spec = {k: v for k, v in spec_change.items()}
    spec["template"] = {k: v for k, v in spec["template"].items() if v is not None}
    code, output = _apply(sandbox, instance_group(_unique("bad"), **spec))

    assert code != 0, f"accepted: {output}"
    assert field in output, output
    assert message in output, output


def test_the_api_server_accepts_a_baremetal_group(sandbox: RunningSandbox) -> None:
    name = _unique("metal")
    code, output = _apply(sandbox, instance_group(name, **_bare()))
    assert code == 0, output
    sandbox.kubectl("delete", "ig", name)


@pytest.mark.parametrize(
    ("spec_change", "field", "message"),
    [
        (
            {"rules": {"maxAge": "forty-eight hours"}},
            "spec.rules.maxAge",
            "must be a duration such as",
        ),
        (
            {"rules": {"maxAge": "24h", "maxAgeSpread": "36h"}},
            "spec.rules.maxAgeSpread",
            "maxAgeSpread must not exceed maxAge",
        ),
        (
            {"rules": {"maxAge": "48h", "maxAgeJitter": "4h", "maxAgeSpread": "12h"}},
            "spec.rules.maxAgeSpread",
            "maxAgeSpread and maxAgeJitter cannot be set together",
        ),
        (
            {"budgets": [{"maxInFlight": "150%"}]},
            "spec.budgets[0].maxInFlight",
            "percentage from 0% to 100%",
        ),
        (
            {"budgets": [{"maxInFlight": 1, "scope": "Region"}]},
            "spec.budgets[0].scope",
            'Unsupported value: "Region"',
        ),
        (
            {"budgets": [{"maxInFlight": 1, "schedule": "0 9 * * 1-5"}]},
            "spec.budgets[0]",
            "schedule and duration must be set together",
        ),
        (
            {"lifecycle": {"preDrain": [{"name": "hook", "http": {"url": "ftp://x"}}]}},
            "spec.lifecycle.preDrain[0].http.url",
            "must be an http:// or https:// URL",
        ),
        (
            {
                "lifecycle": {
                    "preTerminate": [
                        {
                            "name": "etcd",
                            "etcd": {"endpoints": ["https://e:2379"], "snapshot": {"dir": "bak"}},
                        }
                    ]
                }
            },
            "spec.lifecycle.preTerminate[0].etcd.snapshot.dir",
            "should match '^/'",
        ),
        (
            {"lifecycle": {"preDrain": [{"http": {"url": "https://h.example"}}]}},
            "spec.lifecycle.preDrain[0].name",
            "Required value",
        ),
        (
            {"lifecycle": {"preDrain": [{"name": "job", "job": {"namespace": "ops"}}]}},
            "spec.lifecycle.preDrain[0].job",
            "exactly one of template or templateConfigMap must be set",
        ),
        (
            {
                "lifecycle": {
                    "preTerminate": [{"name": "vault", "vault": {"address": "https://v:8200"}}]
                }
            },
            "spec.lifecycle.preTerminate[0].vault.tokenSecret",
            "Required value",
        ),
        (
            {"controlPlane": {"healthChecks": ["etcd-0:2379/health"]}},
            "spec.controlPlane.healthChecks[0]",
            "must be an http:// or https:// URL",
        ),
        (
            {"controlPlane": {"bakeTime": "ten minutes"}},
            "spec.controlPlane.bakeTime",
            "must be a duration",
        ),
        (
            {"remediation": {"steps": [{}]}},
            "spec.remediation.steps[0]",
            "exactly one of reboot or replace must be set",
        ),
        (
            {"remediation": {"steps": [{"reboot": {}, "replace": {}}]}},
            "spec.remediation.steps[0]",
            "exactly one of reboot or replace must be set",
        ),
        (
            {"remediation": {"steps": []}},
            "spec.remediation.steps",
            "should have at least 1 items",
        ),
        (
            {"remediation": {"steps": [{"replace": {}}, {"reboot": {"timeout": "5m"}}]}},
            "spec.remediation.steps",
            "replace must be the last step",
        ),
        (
            {"remediation": {"steps": [{"reboot": {"timeout": "ten minutes"}}]}},
            "spec.remediation.steps[0].reboot.timeout",
            "must be a duration",
        ),
        (
            {"remediation": {"steps": [{"replace": {}}], "maxUnhealthy": {"zone": "120%"}}},
            "spec.remediation.maxUnhealthy.zone",
            "percentage from 0% to 100%",
        ),
    ],
    ids=[
        "malformed-duration",
        "spread-over-max-age",
        "spread-with-jitter",
        "percent-over-100",
        "unknown-scope",
        "window-without-duration",
        "non-http-url",
        "unimplemented-action-kind",
        "action-without-name",
        "job-without-template",
        "vault-without-token",
        "control-plane-health-check-not-http",
        "control-plane-malformed-bake-time",
        "remediation-step-without-kind",
        "remediation-step-with-two-kinds",
        "remediation-without-steps",
        "remediation-replace-not-last",
        "remediation-malformed-timeout",
        "remediation-zone-share-over-100",
    ],
)
def test_the_api_server_refuses_an_invalid_termination_policy(
    sandbox: RunningSandbox, spec_change: dict[str, Any], field: str, message: str
) -> None:
    code, output = _apply(sandbox, termination_policy(_unique("bad"), **spec_change))

    assert code != 0, f"accepted: {output}"
    assert field in output, output
    assert message in output, output


def test_a_valid_termination_policy_is_accepted_and_shows_its_counters(
    sandbox: RunningSandbox,
) -> None:
    name = _unique("rotate")
    code, output = _apply(sandbox, termination_policy(name))
    assert code == 0, output

    listing = sandbox.kubectl("get", "tp", name)
    header = listing.stdout.splitlines()[0].split()
    for column in ("SELECTED", "IN-FLIGHT", "COMPLETED", "BLOCKED"):
        assert column in header
    sandbox.kubectl("delete", "tp", name)


def test_a_spread_as_long_as_max_age_is_accepted(sandbox: RunningSandbox) -> None:
    # CEL compares the two as durations: 2880m is 48h, not a longer string.
    name = _unique("even")
    rules = {"maxAge": "48h", "maxAgeSpread": "2880m"}
    code, output = _apply(sandbox, termination_policy(name, rules=rules))
    assert code == 0, output
    sandbox.kubectl("delete", "tp", name)


def test_a_remediation_chain_is_accepted_with_its_defaults(sandbox: RunningSandbox) -> None:
    name = _unique("heal")
    steps = [{"reboot": {}}, {"replace": {}}]
    code, output = _apply(sandbox, termination_policy(name, remediation={"steps": steps}))
    assert code == 0, output

    found = sandbox.kubectl("get", "tp", name, "-o", "json")
    remediation = yaml.safe_load(found.stdout)["spec"]["remediation"]
    assert remediation["steps"] == [{"reboot": {"timeout": "10m"}}, {"replace": {}}]
    sandbox.kubectl("delete", "tp", name)


def _watchdog(name: str, check: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "molt.dev/v1alpha1",
        "kind": "Watchdog",
        "metadata": {"name": name},
        "spec": {"check": check},
    }


@pytest.mark.parametrize(
    ("check", "field", "message"),
    [
        pytest.param(
            {"apiLatency": {}, "http": {"url": "http://127.0.0.1:1/"}},
            "spec.check",
            "exactly one of probePod, apiLatency, nodeReadyRatio, http or nodeCondition",
            id="two-checks",
        ),
        pytest.param({"dnsLookup": {"name": "x"}}, "spec.check", "unknown field", id="unknown"),
        pytest.param(
            {"http": {"url": "ftp://127.0.0.1/"}},
            "spec.check.http.url",
            "must be an http:// or https:// URL",
            id="http-non-url",
        ),
        pytest.param(
            {"nodeCondition": {"type": "KernelDeadlock", "max": -1}},
            "spec.check.nodeCondition.max",
            "greater than or equal to 0",
            id="negative-max",
        ),
    ],
)
def test_the_api_server_refuses_an_invalid_watchdog(
    sandbox: RunningSandbox, check: dict[str, Any], field: str, message: str
) -> None:
    code, output = _apply(sandbox, _watchdog(_unique("wd"), check))

    assert code != 0, f"accepted: {output}"
    assert field in output, output
    assert message in output, output


def _reaper_manifest(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "molt.dev/v1alpha1",
        "kind": "Reaper",
        "metadata": {"name": _unique("rp")},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"stuckPods": {"after": "-10m"}}, "spec.stuckPods.after", "must be a duration such as"),
        ({"finishedPods": {"ttl": "1 day"}}, "spec.finishedPods.ttl", "must be a duration such as"),
        ({"ghostNodes": {}, "surprise": True}, "spec.surprise", 'unknown field "spec.surprise"'),
        ({"ghostNodes": {}, "maxPerMinute": 0}, "spec.maxPerMinute", "greater than or equal to 1"),
        (
            {"dryRun": True},
            "spec",
            "at least one of stuckPods, finishedPods or ghostNodes must be set",
        ),
    ],
    ids=["negative-duration", "malformed-ttl", "unknown-field", "zero-rate", "no-reaper"],
)
def test_the_api_server_refuses_an_invalid_reaper(
    sandbox: RunningSandbox, spec: dict[str, Any], field: str, message: str
) -> None:
    code, output = _apply(sandbox, _reaper_manifest(spec))

    assert code != 0, f"accepted: {output}"
    assert field in output, output
    assert message in output, output


def test_a_valid_reaper_is_accepted_with_its_defaults_and_columns(
    sandbox: RunningSandbox,
) -> None:
    manifest = _reaper_manifest({"stuckPods": {}})
    name = manifest["metadata"]["name"]
    code, output = _apply(sandbox, manifest)
    assert code == 0, output

    stored = sandbox.kubectl("get", "reaper", name, "-o", "jsonpath={.spec}").stdout
    assert '"after":"10m"' in stored
    assert '"maxPerMinute":10' in stored
    listing = sandbox.kubectl("get", "rp", name)
    header = listing.stdout.splitlines()[0].split()
    for column in ("DRY-RUN", "STUCK-PODS", "FINISHED-PODS", "GHOST-NODES", "LAST-REAP"):
        assert column in header
    sandbox.kubectl("delete", "rp", name)


def test_a_node_condition_watchdog_is_accepted_and_lists_state_and_last_check(
    sandbox: RunningSandbox,
) -> None:
    name = _unique("wd")
    code, output = _apply(sandbox, _watchdog(name, {"nodeCondition": {"type": "KernelDeadlock"}}))
    assert code == 0, output

    header = sandbox.kubectl("get", "wd", name).stdout.splitlines()[0].split()
    assert "STATE" in header
    assert "LAST-CHECK" in header
    sandbox.kubectl("delete", "wd", name)
