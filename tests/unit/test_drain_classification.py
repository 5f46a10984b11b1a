"""What a drain does with each pod, and how the Eviction API's answers are read."""

from datetime import timedelta

import pytest

from molt.kube.transport import ApiError
from molt.kube.writes import classify_eviction_error
from molt.policy.drain import classify_pods
from molt.ports import EvictionOutcome
from tests.support.fake_ports import pod
from tests.support.fleet import NOW

DEADLINE = NOW + timedelta(minutes=30)
HOLD = {"molt.dev/do-not-disrupt": "true"}


def _keys(pods) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.key for p in pods]


# classify_pods


def test_daemonset_mirror_and_finished_pods_are_left_alone() -> None:
    pods = [
        pod("agent", owner_kinds=("DaemonSet",)),
        pod("static", annotations={"kubernetes.io/config.mirror": "abc123"}),
        pod("job-ok", phase="Succeeded", owner_kinds=("Job",)),
        pod("job-failed", phase="Failed", owner_kinds=("Job",)),
    ]

    view = classify_pods(pods, NOW, DEADLINE)

    assert _keys(view.left_alone) == [
        "default/agent",
        "default/job-failed",
        "default/job-ok",
        "default/static",
    ]
    assert (view.evict, view.held, view.leaving) == ((), (), ())


def test_pods_already_being_deleted_are_waited_for_not_evicted() -> None:
    view = classify_pods([pod("going", deleting=True), pod("web")], NOW, DEADLINE)

    assert _keys(view.leaving) == ["default/going"]
    assert _keys(view.evict) == ["default/web"]


def test_a_do_not_disrupt_pod_being_deleted_is_waited_for_rather_than_held() -> None:
    view = classify_pods([pod("going", annotations=HOLD, deleting=True)], NOW, DEADLINE)

    assert _keys(view.leaving) == ["default/going"]
    assert view.held == ()


def test_do_not_disrupt_pods_are_held_before_the_deadline() -> None:
    pods = [pod("precious", annotations=HOLD), pod("web")]

    view = classify_pods(pods, DEADLINE - timedelta(seconds=1), DEADLINE)

    assert _keys(view.held) == ["default/precious"]
    assert _keys(view.evict) == ["default/web"]


def test_do_not_disrupt_pods_are_evicted_from_the_deadline_on() -> None:
    view = classify_pods([pod("precious", annotations=HOLD)], DEADLINE, DEADLINE)

    assert _keys(view.evict) == ["default/precious"]
    assert view.held == ()


def test_without_a_deadline_do_not_disrupt_pods_stay_held() -> None:
    view = classify_pods([pod("precious", annotations=HOLD)], NOW + timedelta(days=365), None)

    assert _keys(view.held) == ["default/precious"]


def test_a_do_not_disrupt_annotation_other_than_true_does_not_hold() -> None:
    pods = [pod("lax", annotations={"molt.dev/do-not-disrupt": "yes"})]

    view = classify_pods(pods, NOW, DEADLINE)

    assert _keys(view.evict) == ["default/lax"]


def test_pods_are_ordered_by_namespace_then_name_whatever_the_input_order() -> None:
    pods = [
        pod("b", namespace="team-b"),
        pod("z", namespace="team-a"),
        pod("a", namespace="team-b"),
        pod("c", namespace="team-a"),
    ]

    forward = classify_pods(pods, NOW, DEADLINE)
    backward = classify_pods(list(reversed(pods)), NOW, DEADLINE)

    expected = ["team-a/c", "team-a/z", "team-b/a", "team-b/b"]
    assert _keys(forward.evict) == expected
    assert _keys(backward.evict) == expected


def test_a_node_with_only_pods_left_alone_is_done() -> None:
    view = classify_pods([pod("agent", owner_kinds=("DaemonSet",))], NOW, DEADLINE)

    assert view.done is True
    assert view.remaining == 0


@pytest.mark.parametrize(
    ("blocker", "remaining"),
    [
        (pod("web"), 1),
        (pod("precious", annotations=HOLD), 1),
        (pod("going", deleting=True), 1),
    ],
    ids=["to-evict", "held", "leaving"],
)
def test_a_node_is_not_done_while_a_pod_must_still_leave(blocker, remaining) -> None:  # type: ignore[no-untyped-def]
    view = classify_pods([blocker, pod("agent", owner_kinds=("DaemonSet",))], NOW, DEADLINE)

    assert view.done is False
    assert view.remaining == remaining


def test_an_empty_node_is_done() -> None:
    assert classify_pods([], NOW, DEADLINE).done is True


# classify_eviction_error


def _error(status: int, body: dict) -> ApiError:  # type: ignore[type-arg]
    return ApiError(status, body, "POST", "/api/v1/namespaces/shop/pods/web-0/eviction")


def test_a_429_means_a_pdb_allows_no_disruption_now() -> None:
    error = _error(
        429,
        {
            "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget"}]},
        },
    )

    result = classify_eviction_error(error)

    assert result.outcome == EvictionOutcome.PDB_BLOCKED
    assert result.message == "Cannot evict pod as it would violate the pod's disruption budget."


def test_a_500_naming_more_than_one_pdb_means_multiple_pdbs() -> None:
    message = (
        "This pod has more than one PodDisruptionBudget, which the eviction subresource "
        "does not support."
    )

    result = classify_eviction_error(_error(500, {"reason": "InternalError", "message": message}))

    assert result.outcome == EvictionOutcome.MULTIPLE_PDBS
    assert result.message == message


def test_a_403_caused_by_a_terminating_namespace_means_namespace_terminating() -> None:
    error = _error(
        403,
        {
            "reason": "Forbidden",
            "message": 'pods "web-0" is forbidden: unable to create new content in namespace '
            "shop because it is being terminated",
            "details": {
                "causes": [
                    {
                        "reason": "NamespaceTerminating",
                        "message": "namespace shop is being terminated",
                        "field": "metadata.namespace",
                    }
                ]
            },
        },
    )

    assert classify_eviction_error(error).outcome == EvictionOutcome.NAMESPACE_TERMINATING


def test_a_403_for_another_cause_is_a_failure() -> None:
    error = _error(403, {"reason": "Forbidden", "message": "RBAC: access denied"})

    assert classify_eviction_error(error).outcome == EvictionOutcome.FAILED


@pytest.mark.parametrize("status", [404, 409])
def test_a_404_or_409_means_the_pod_is_gone(status: int) -> None:
    error = _error(status, {"reason": "NotFound", "message": 'pods "web-0" not found'})

    assert classify_eviction_error(error).outcome == EvictionOutcome.GONE


def test_any_other_500_is_a_failure_that_says_what_was_called() -> None:
    error = _error(500, {"reason": "InternalError", "message": "etcdserver: request timed out"})

    result = classify_eviction_error(error)

    assert result.outcome == EvictionOutcome.FAILED
    assert result.message == (
        "POST /api/v1/namespaces/shop/pods/web-0/eviction: 500 etcdserver: request timed out"
    )
