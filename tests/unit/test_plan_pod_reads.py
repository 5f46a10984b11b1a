"""``molt plan`` reads the pods of the namespaces where a PDB can deadlock a drain (one
LIST each, or one LIST of every pod when they are many), and finds the same deadlocks as
a look at every pod of the cluster."""

from __future__ import annotations

from typing import Any

from molt.api.types import LabelSelector
from molt.kube.facts import NAMESPACED_LISTS_UP_TO, pods_in
from molt.policy.pdbs import DeadlockIndex, PdbView, deadlocks_by_node
from molt.policy.snapshot import PodView


def _pod(namespace: str, name: str, node: str, app: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "uid": f"uid-{namespace}-{name}",
            "labels": {"app": app},
            "ownerReferences": [{"kind": "ReplicaSet"}],
        },
        "spec": {"nodeName": node},
        "status": {"phase": "Running"},
    }


class _Pods:
    """Every pod of a small cluster, listed whole or by namespace, and the paths asked."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.paths: list[str] = []

    async def list_all(
        self, path: str, query: list[tuple[str, str]] | None = None, page_size: int = 500
    ) -> tuple[list[dict[str, Any]], str]:
        self.paths.append(path)
        if path == "/api/v1/pods":
            return self.pods, "1"
        namespace = path.split("/")[4]
        return [p for p in self.pods if p["metadata"]["namespace"] == namespace], "1"


def _cluster(namespaces: int) -> list[dict[str, Any]]:
    return [
        _pod(f"ns-{n}", f"web-{i}", f"node-{(n + i) % 5}", "web")
        for n in range(namespaces)
        for i in range(3)
    ]


def _blocking(namespace: str) -> PdbView:
    return PdbView(namespace, "web", LabelSelector(match_labels={"app": "web"}), max_unavailable=0)


async def _read(raw: _Pods, namespaces: set[str]) -> list[PodView]:
    # The fake stands for the one call pods_in makes of a RawApi.
    return await pods_in(raw, namespaces)  # type: ignore[arg-type]


async def test_a_few_namespaces_are_read_one_list_each_and_no_other_pod() -> None:
    raw = _Pods(_cluster(6))
    pdbs = [_blocking("ns-1"), _blocking("ns-4")]
    index = DeadlockIndex(pdbs)

    pods = await _read(raw, set(index.namespaces))

    assert raw.paths == ["/api/v1/namespaces/ns-1/pods", "/api/v1/namespaces/ns-4/pods"]
    assert {p.namespace for p in pods} == {"ns-1", "ns-4"}
    every_pod = await _read(_Pods(raw.pods), {f"ns-{n}" for n in range(6)})
    assert index.by_node(pods) == deadlocks_by_node(every_pod, pdbs)
    assert index.by_node(pods)  # the PDBs do hold nodes: the comparison means something


async def test_many_namespaces_are_read_by_one_list_and_filtered() -> None:
    many = NAMESPACED_LISTS_UP_TO + 2
    raw = _Pods(_cluster(many + 3))
    wanted = {f"ns-{n}" for n in range(many)}

    pods = await _read(raw, wanted)

    assert raw.paths == ["/api/v1/pods"]
    assert {p.namespace for p in pods} == wanted
    assert len(pods) == 3 * many
