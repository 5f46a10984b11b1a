"""Post-launch manifests: node fields in templates, and the reconciler over the in-memory
cluster (applied once per node, swept when the node goes, errors reported once)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from molt.api import InstanceGroup
from molt.controllers.manifests.reconciler import ManifestReconciler
from molt.policy.node_template import TemplateError, render_object, render_text
from molt.policy.snapshot import NodeView
from molt.ports import ObjectRef
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster

CREATED = datetime(2026, 12, 1, tzinfo=UTC)
HOST_ENDPOINT = {
    "apiVersion": "crd.projectcalico.org/v1",
    "kind": "HostEndpoint",
    "metadata": {"name": "{{ .Node.Name }}-eth0", "labels": {"zone": "{{ .Node.Zone }}"}},
    "spec": {"node": "{{.Node.Name}}", "expectedIPs": ["{{ .Node.InternalIP }}"]},
}


def node(name: str, *, uid: str = "", addresses: tuple[str, ...] = ("10.0.0.7",)) -> NodeView:
    labels = {
        "molt.dev/instance-group": "workers",
        "topology.kubernetes.io/zone": "zone-a",
        "node-role.example/edge": "yes",
    }
    return NodeView(
        name=name, created=CREATED, labels=labels, uid=uid or f"uid-{name}", addresses=addresses
    )


def group_with(*manifests: dict[str, Any]) -> InstanceGroup:
    entries = [{"name": f"entry-{i}", "manifest": m} for i, m in enumerate(manifests)]
    return InstanceGroup.model_validate(
        instance_group("workers", lifecycle={"postLaunch": entries})
    )


def host_endpoints(cluster: FakeCluster) -> dict[str, dict[str, Any]]:
    return {ref.name: body for ref, body in cluster.objects.items() if ref.kind == "HostEndpoint"}


def test_node_fields_are_replaced_in_every_string() -> None:
    rendered = render_object(HOST_ENDPOINT, node("n1"))
    assert rendered["metadata"] == {"name": "n1-eth0", "labels": {"zone": "zone-a"}}
    assert rendered["spec"] == {"node": "n1", "expectedIPs": ["10.0.0.7"]}
    assert HOST_ENDPOINT["metadata"]["name"] == "{{ .Node.Name }}-eth0"  # a copy
    assert render_text('{{ index .Node.Labels "node-role.example/edge" }}', node("n1")) == "yes"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{{ .Node.Hostname }}", r"unknown placeholder \{\{ \.Node\.Hostname \}\}"),
        ('{{ index .Node.Labels "absent" }}', "has no label 'absent'"),
    ],
)
def test_an_unknown_placeholder_or_missing_value_is_an_error_naming_it(
    text: str, error: str
) -> None:
    with pytest.raises(TemplateError, match=error):
        render_text(text, node("n1"))
    with pytest.raises(TemplateError, match="has no value"):
        render_text("{{ .Node.InternalIP }}", node("n1", addresses=()))


async def test_each_node_gets_its_object_once_and_loses_it_when_it_goes() -> None:
    cluster = FakeCluster(nodes=[node("n1"), node("n2")], groups=[group_with(HOST_ENDPOINT)])
    manifests = ManifestReconciler(cluster, cluster, FakeClock(CREATED))
    assert await manifests.reconcile("workers") == 60.0
    found = host_endpoints(cluster)
    assert sorted(found) == ["n1-eth0", "n2-eth0"]
    meta = found["n1-eth0"]["metadata"]
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-n1"}
    ]
    assert meta["labels"]["molt.dev/node"] == "n1"
    assert meta["labels"]["molt.dev/post-launch"] == "entry-0"
    assert cluster.event_reasons("n1") == ["PostLaunchApplied"]

    await manifests.reconcile("workers")
    assert len(cluster.applied) == 2, "a steady group is not applied again"

    del cluster.node_views["n1"]
    await manifests.reconcile("workers")
    assert sorted(host_endpoints(cluster)) == ["n2-eth0"]
    gone = ObjectRef("crd.projectcalico.org/v1", "HostEndpoint", "n1-eth0")
    assert cluster.deleted_objects == [gone]


async def test_a_restarted_controller_sweeps_what_a_node_of_the_same_name_left() -> None:
    cluster = FakeCluster(nodes=[node("n1", uid="old")], groups=[group_with(HOST_ENDPOINT)])
    await ManifestReconciler(cluster, cluster, FakeClock(CREATED)).reconcile("workers")
    # The node went and a new Node of the same name joined while no controller ran.
    cluster.node_views["n1"] = node("n1", uid="new", addresses=("10.0.0.9",))
    await ManifestReconciler(cluster, cluster, FakeClock(CREATED)).reconcile("workers")
    found = host_endpoints(cluster)["n1-eth0"]
    assert found["metadata"]["ownerReferences"][0]["uid"] == "new"
    assert found["spec"]["expectedIPs"] == ["10.0.0.9"]


async def test_a_node_without_an_address_waits_and_a_bad_template_is_reported_once() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "{{ .Node.Hostname }}", "namespace": "edge"},
    }
    cluster = FakeCluster(
        nodes=[node("n1", addresses=()), node("n2")], groups=[group_with(HOST_ENDPOINT, bad)]
    )
    manifests = ManifestReconciler(cluster, cluster, FakeClock(CREATED))
    assert await manifests.reconcile("workers") == 10.0, "looks again soon"
    assert sorted(host_endpoints(cluster)) == ["n2-eth0"]  # n1 has no address yet
    await manifests.reconcile("workers")
    failures = [e for e in cluster.events if e.reason == "PostLaunchFailed"]
    assert {e.node for e in failures} == {"n1", "n2", "instancegroup/workers"}
    assert len(failures) == 4, "each node's error once on the node and once on the group"
    assert all("unknown placeholder" in e.message for e in failures)
