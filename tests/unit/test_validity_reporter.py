"""An object Molt cannot use is told so on itself (a ``Valid=False`` condition naming the
field, one Warning Event), once, and the condition goes when the object is fixed."""

from __future__ import annotations

from typing import Any

from molt.api import TerminationPolicy, Watchdog
from molt.controllers.validity.reporter import INVALID_SPEC, VALID, ValidityReporter
from molt.ports import ObjectRef
from tests.support.fake_ports import FakeClock, FakeCluster
from tests.support.fleet import NOW

WHY = "spec.budgets[0].schedule: 'every night' is not a cron expression"
REF = ObjectRef("molt.dev/v1alpha1", "TerminationPolicy", "nightly")


def _stored(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"name": "nightly", "generation": 3},
        "status": {"conditions": conditions},
    }


PROGRESSING = {
    "type": "Progressing",
    "status": "False",
    "reason": "Idle",
    "message": "0 node(s) in the pipeline",
    "lastTransitionTime": "2026-11-23T10:00:00Z",
    "observedGeneration": 2,
}


def _world() -> tuple[FakeCluster, ValidityReporter]:
    cluster = FakeCluster()
    cluster.objects[REF] = _stored([PROGRESSING])
    cluster.unusable_objects[(TerminationPolicy, "nightly")] = WHY
    return cluster, ValidityReporter(cluster, cluster, FakeClock(NOW))


async def test_an_unusable_object_gets_a_condition_naming_the_field_and_one_warning() -> None:
    cluster, reporter = _world()

    await reporter.reconcile()
    await reporter.reconcile()  # nothing new: nothing written again

    [(name, status)] = cluster.policy_status_patches
    assert name == "nightly"
    progressing, valid = status["conditions"]
    assert progressing == PROGRESSING, "the object's other conditions are kept as they were"
    assert (valid["type"], valid["status"], valid["reason"]) == (VALID, "False", INVALID_SPEC)
    assert WHY in valid["message"]
    assert valid["observedGeneration"] == 3
    [event] = cluster.events
    assert (event.node, event.reason, event.warning) == ("policy/nightly", INVALID_SPEC, True)
    assert WHY in event.message


async def test_a_restarted_controller_finds_its_condition_and_writes_nothing_twice() -> None:
    cluster, reporter = _world()
    await reporter.reconcile()
    [(_, status)] = cluster.policy_status_patches
    cluster.objects[REF] = _stored(status["conditions"])  # as the API server now holds it

    restarted = ValidityReporter(cluster, cluster, FakeClock(NOW))
    await restarted.reconcile()

    assert len(cluster.policy_status_patches) == 1
    assert len(cluster.events) == 1


async def test_a_new_problem_is_reported_and_a_fixed_object_loses_the_condition() -> None:
    cluster, reporter = _world()
    await reporter.reconcile()
    [(_, status)] = cluster.policy_status_patches
    cluster.objects[REF] = _stored(status["conditions"])

    other = "spec.budgets[0].timeZone: 'Mars/Olympus' is not an IANA time zone"
    cluster.unusable_objects[(TerminationPolicy, "nightly")] = other
    await reporter.reconcile()
    assert other in cluster.policy_status_patches[-1][1]["conditions"][-1]["message"]
    assert len(cluster.events) == 2
    cluster.objects[REF] = _stored(cluster.policy_status_patches[-1][1]["conditions"])

    cluster.unusable_objects.clear()  # fixed
    await reporter.reconcile()
    assert cluster.policy_status_patches[-1] == ("nightly", {"conditions": [PROGRESSING]})


async def test_an_unusable_object_already_gone_is_left_alone() -> None:
    cluster = FakeCluster()
    cluster.unusable_objects[(Watchdog, "gone")] = "spec.checks[0]: nonsense"
    await ValidityReporter(cluster, cluster, FakeClock(NOW)).reconcile()
    assert cluster.watchdog_status_patches == []
    assert cluster.events == []
