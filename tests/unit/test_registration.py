"""Registration: an AWS providerID names an instance, and a node that joined one of
Molt's cells gets that cell's labels and its template's labels and taints, once.

The pure parts (providerID parsing, label and taint merge) are checked directly; the
reconciler runs over the in-memory fakes with a scripted Registrar.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from molt.api import InstanceGroup
from molt.api.instancegroup import Template
from molt.cloud.aws import parse_provider_id
from molt.cloud.provider import CellRef, Instance, NodeOrigin
from molt.controllers.manager import ControllerManager
from molt.controllers.registration import (
    REGISTRATION_PATIENCE,
    UNKNOWN_RECHECK,
    RegistrationReconciler,
)
from molt.observe.metrics import Metrics
from molt.policy.cells import template_revision
from molt.policy.registration import missing_taints, needs_registration, registration_labels
from molt.policy.snapshot import NodeTaint, NodeView
from tests.support.builders import instance_group
from tests.support.fake_ports import FakeClock, FakeCluster, FakeProvider

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LAUNCHED = NOW - timedelta(minutes=3)
TEMPLATE: dict[str, Any] = {
    "instanceTypes": ["m5.large"],
    "image": "ami-1",
    "labels": {"team": "data", "molt.dev/instance-group": "elsewhere"},
    "taints": [{"key": "dedicated", "value": "data", "effect": "NoSchedule"}],
    "aws": {"subnets": {"eu-west-1a": "subnet-1"}},
}
REVISION = template_revision(Template.model_validate(TEMPLATE))
CELL = CellRef("workers", REVISION, "eu-west-1a", "spot")
PROVIDER_ID = "aws:///eu-west-1a/i-0abc123"


# -- providerID ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("aws:///eu-west-1a/i-0abc123", ("eu-west-1a", "i-0abc123")),
        ("aws:///us-east-1b/i-0123456789abcdef0", ("us-east-1b", "i-0123456789abcdef0")),
        ("aws://eu-west-1a/i-0abc123", None),  # two slashes: not the form AWS nodes carry
        ("aws:///eu-west-1a/", None),
        ("aws:///eu-west-1a/vol-0abc", None),
        ("aws:///eu-west-1a/i-0abc/extra", None),
        ("kind://docker/kind/kind-worker", None),
        ("", None),
        (None, None),
    ],
)
def test_an_aws_provider_id_names_a_zone_and_an_instance_and_nothing_else_does(
    value: str | None, parsed: tuple[str, str] | None
) -> None:
    assert parse_provider_id(value) == parsed


# -- labels and taints -----------------------------------------------------------------


def test_a_registered_nodes_labels_are_its_cells_over_its_templates() -> None:
    labels = registration_labels(
        "workers", "r1", "eu-west-1a", "spot", {"team": "data", "molt.dev/revision": "other"}
    )
    assert labels == {
        "team": "data",
        "molt.dev/instance-group": "workers",
        "molt.dev/revision": "r1",  # a template label never moves a node out of its cell
        "topology.kubernetes.io/zone": "eu-west-1a",
        "molt.dev/capacity-type": "spot",
    }


def test_only_taints_the_node_lacks_by_key_and_effect_are_added_each_once() -> None:
    wanted = [
        NodeTaint("dedicated", "NoSchedule", "data"),
        NodeTaint("dedicated", "NoExecute", "data"),  # same key, other effect: another taint
        NodeTaint("gpu", "NoSchedule"),
        NodeTaint("gpu", "NoSchedule", "twice"),  # the template repeats itself: added once
    ]
    existing = [("dedicated", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoSchedule")]

    added = missing_taints(existing, wanted)

    # The node's own dedicated:NoSchedule stays as it is, whatever its value.
    assert added == [NodeTaint("dedicated", "NoExecute", "data"), NodeTaint("gpu", "NoSchedule")]
    assert missing_taints([("dedicated", "NoSchedule")], wanted[:1]) == []


def test_a_node_with_a_group_label_is_registered_and_one_without_is_not() -> None:
    assert needs_registration({"kubernetes.io/hostname": "n1"})
    assert not needs_registration({"molt.dev/instance-group": "workers"})


# -- the reconciler --------------------------------------------------------------------


class ScriptedRegistrar:
    """Knows the instances it was given; counts every question."""

    name = "aws"

    def __init__(self, known: dict[str, NodeOrigin]) -> None:
        self.known = known
        self.asked: list[str] = []

    async def describe_node(self, node: NodeView) -> NodeOrigin | None:
        self.asked.append(node.name)
        return self.known.get(node.provider_id or "")


def bare_node(name: str, provider_id: str | None = PROVIDER_ID, **extra: Any) -> NodeView:
    return NodeView(
        name=name,
        created=NOW - timedelta(minutes=1),
        labels={"kubernetes.io/hostname": name},
        provider_id=provider_id,
        **extra,
    )


def origin(cell: CellRef = CELL) -> NodeOrigin:
    return NodeOrigin(cell, Instance("i-0abc123", LAUNCHED, provider_id=PROVIDER_ID))


def reconciler(
    cluster: FakeCluster, registrar: ScriptedRegistrar
) -> tuple[RegistrationReconciler, FakeClock]:
    clock = FakeClock(NOW)
    return RegistrationReconciler(cluster, cluster, clock, [registrar]), clock


def workers(template: dict[str, Any] = TEMPLATE, **status: Any) -> InstanceGroup:
    manifest = instance_group("workers", provider="aws", template=template)
    if status:
        manifest["status"] = status
    return InstanceGroup.model_validate(manifest)


async def test_a_bare_node_gets_its_cell_template_and_launch_time_once() -> None:
    taint = NodeTaint("dedicated", "NoSchedule", "mine")
    cluster = FakeCluster(nodes=[bare_node("n1", taints=(taint,))], groups=[workers()])
    registrar = ScriptedRegistrar({PROVIDER_ID: origin()})
    registration, _ = reconciler(cluster, registrar)

    assert await registration.reconcile("n1") is None

    node = cluster.node_views["n1"]
    assert node.labels == {
        "kubernetes.io/hostname": "n1",
        "team": "data",
        "molt.dev/instance-group": "workers",
        "molt.dev/revision": REVISION,
        "topology.kubernetes.io/zone": "eu-west-1a",
        "molt.dev/capacity-type": "spot",
    }
    assert node.taints == (taint,)  # the node's own dedicated:NoSchedule is not doubled
    assert node.annotations == {"molt.dev/launched-at": "2026-11-23T11:57:00Z"}
    assert [(e.reason, e.warning) for e in cluster.events] == [("Registered", False)]
    assert str(CELL) in cluster.events[0].message

    # Registered: the next reconciles neither ask the provider nor write.
    assert await registration.reconcile("n1") is None
    assert registrar.asked == ["n1"]
    assert len(cluster.registrations) == 1
    assert len(cluster.events) == 1


async def test_the_templates_taints_are_added_to_a_node_without_them() -> None:
    cluster = FakeCluster(nodes=[bare_node("n1")], groups=[workers()])
    registration, _ = reconciler(cluster, ScriptedRegistrar({PROVIDER_ID: origin()}))

    await registration.reconcile("n1")

    assert cluster.node_views["n1"].taints == (NodeTaint("dedicated", "NoSchedule", "data"),)


async def test_a_node_of_the_previous_revision_gets_the_template_the_status_kept() -> None:
    newer = {**TEMPLATE, "image": "ami-2", "labels": {"team": "new"}, "taints": []}
    group = workers(
        newer,
        currentRevision=template_revision(Template.model_validate(newer)),
        revisions=[{"name": REVISION, "state": "Previous", "template": TEMPLATE}],
    )
    cluster = FakeCluster(nodes=[bare_node("n1")], groups=[group])
    registration, _ = reconciler(cluster, ScriptedRegistrar({PROVIDER_ID: origin()}))

    await registration.reconcile("n1")

    node = cluster.node_views["n1"]
    assert (node.labels["team"], node.labels["molt.dev/revision"]) == ("data", REVISION)
    assert [t.key for t in node.taints] == ["dedicated"]


async def test_a_revision_whose_template_is_gone_still_gets_its_cell_and_a_warning() -> None:
    cluster = FakeCluster(nodes=[bare_node("n1")])  # the group was deleted meanwhile
    registration, _ = reconciler(cluster, ScriptedRegistrar({PROVIDER_ID: origin()}))

    await registration.reconcile("n1")

    node = cluster.node_views["n1"]
    assert node.labels["molt.dev/instance-group"] == "workers"
    assert "team" not in node.labels
    assert node.taints == ()
    assert [(e.reason, e.warning) for e in cluster.events] == [("Registered", True)]


async def test_a_node_no_provider_knows_is_untouched_and_logged_once() -> None:
    cluster = FakeCluster(nodes=[bare_node("n1", "aws:///eu-west-1a/i-0dead")])
    registration, clock = reconciler(cluster, ScriptedRegistrar({}))

    with structlog.testing.capture_logs() as logs:
        first = await registration.reconcile("n1")
        again = await registration.reconcile("n1")
        clock.advance(REGISTRATION_PATIENCE.total_seconds())
        late = await registration.reconcile("n1")

    assert (first, again, late) == (UNKNOWN_RECHECK, UNKNOWN_RECHECK, None)  # then gives up
    assert [entry["event"] for entry in logs] == ["registration.unknown_node"]
    assert cluster.registrations == []
    assert cluster.events == []
    assert cluster.node_views["n1"].labels == {"kubernetes.io/hostname": "n1"}


async def test_a_node_without_a_provider_id_is_not_looked_at_again() -> None:
    cluster = FakeCluster(nodes=[bare_node("n1", None)])
    registration, _ = reconciler(cluster, ScriptedRegistrar({}))

    assert await registration.reconcile("n1") is None
    assert cluster.registrations == []


async def test_a_labelled_node_is_left_alone_and_only_bare_nodes_are_wanted() -> None:
    labelled = NodeView(
        name="n2", created=NOW, labels={"molt.dev/instance-group": "workers"}, provider_id="x"
    )
    cluster = FakeCluster(nodes=[labelled], groups=[workers()])
    registrar = ScriptedRegistrar({"x": origin()})
    registration, _ = reconciler(cluster, registrar)

    assert await registration.reconcile("n2") is None
    assert registrar.asked == []
    assert not registration.wants(None, labelled)
    assert registration.wants(None, bare_node("n1"))
    idle = RegistrationReconciler(cluster, cluster, FakeClock(NOW), [])
    assert not idle.wants(None, bare_node("n1"))  # no Registrar: nothing to enqueue


class RegisteringProvider(FakeProvider):
    """The FAKE cloud, as a Registrar that knows one instance."""

    name = "aws"

    async def describe_node(self, node: NodeView) -> NodeOrigin | None:
        return origin() if node.provider_id == PROVIDER_ID else None


async def test_the_controller_queues_a_bare_node_under_register_and_registers_it() -> None:
    cluster = FakeCluster(groups=[workers()])
    controller = ControllerManager(
        cluster, cluster, FakeClock(NOW), Metrics(), providers={"aws": RegisteringProvider()}
    )
    node = bare_node("n1")
    cluster.add_node(node)

    controller.node_changed("n1", None, node)

    assert len(controller.queue) == 1
    key = await controller.queue.get()
    assert key == "register/n1"
    assert await controller.dispatch(key) is None
    controller.queue.done(key)
    registered = cluster.node_views["n1"]
    assert registered.labels["molt.dev/instance-group"] == "workers"
    # The write's own change event (now labelled) queues no more registration (its new
    # group is looked at, as for any node that joins a group).
    controller.node_changed("n1", node, registered)
    queued = [await controller.queue.get() for _ in range(len(controller.queue))]
    assert queued == ["group/workers"]


async def test_without_a_registrar_no_node_is_queued_for_registration() -> None:
    cluster = FakeCluster(nodes=[bare_node("n1")])
    controller = ControllerManager(
        cluster, cluster, FakeClock(NOW), Metrics(), providers={"kwok": FakeProvider(cluster)}
    )

    controller.node_changed("n1", None, cluster.node_views["n1"])
    controller.enqueue_all()

    assert len(controller.queue) == 1  # only the selection enqueue_all always adds
    assert await controller.queue.get() == "selection"
