"""The pod projection the controller's cluster-wide cache keeps: everything a drain reads,
nothing more, with the strings that repeat across pods shared."""

from __future__ import annotations

import json

from molt.api.labels import DO_NOT_DISRUPT, MIRROR_ANNOTATION
from molt.kube.projections import cached_pod_view, pod_view


def _raw(name: str, annotations: dict[str, str]) -> dict[str, object]:
    # Through JSON, as from the wire: equal strings are distinct objects.
    return json.loads(
        json.dumps(
            {
                "metadata": {
                    "name": name,
                    "namespace": "shop",
                    "uid": f"uid-{name}",
                    "labels": {"app": "web", "pod-template-hash": "5f7c9"},
                    "annotations": annotations,
                    "ownerReferences": [{"kind": "ReplicaSet", "name": "web-5f7c9"}],
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                },
                "spec": {
                    "nodeName": "node-1",
                    "tolerations": [{"operator": "Exists"}],
                },
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            }
        )
    )


def test_the_cached_pod_keeps_what_a_drain_reads_and_drops_other_annotations() -> None:
    raw = _raw(
        "web-1",
        {
            MIRROR_ANNOTATION: "",
            DO_NOT_DISRUPT: "true",
            "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 4000 + "}",
        },
    )
    full, cached = pod_view(raw), cached_pod_view(raw)
    assert cached.annotations == {MIRROR_ANNOTATION: "", DO_NOT_DISRUPT: "true"}
    assert cached.mirror
    assert cached.do_not_disrupt
    # Everything else a drain classifies by is the same.
    for name in ("namespace", "name", "uid", "node", "phase", "owner_kinds", "labels"):
        assert getattr(cached, name) == getattr(full, name), name
    assert (cached.ready, cached.tolerates_cordon, cached.created, cached.deleting) == (
        full.ready,
        full.tolerates_cordon,
        full.created,
        full.deleting,
    )


def test_strings_repeated_across_cached_pods_are_shared() -> None:
    one, two = cached_pod_view(_raw("web-1", {})), cached_pod_view(_raw("web-2", {}))
    assert one.namespace is two.namespace
    assert one.node is two.node
    assert one.labels["app"] is two.labels["app"]
    assert next(iter(one.labels)) is next(iter(two.labels))


def test_a_name_the_api_server_generated_is_told_from_one_a_client_chose() -> None:
    generated = _raw("web-5f7c9-x2b4q", {})
    generated["metadata"]["generateName"] = "web-5f7c9-"  # type: ignore[index]
    chosen = _raw("db-0", {})
    prefix_only = _raw("web-5f7c9-custom-name", {})
    prefix_only["metadata"]["generateName"] = "web-5f7c9-"  # type: ignore[index]
    assert pod_view(generated).name_generated
    assert cached_pod_view(generated).name_generated
    assert not pod_view(chosen).name_generated
    assert not pod_view(prefix_only).name_generated, "named by a client, not generated"
