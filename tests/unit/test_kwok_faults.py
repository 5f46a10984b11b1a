"""The kwok provider's fault knobs, against an in-memory stand-in for the Node and
ConfigMap API: ``notReady`` cells get nodes that join without a kubelet, other cells
nodes kwok runs; ``capacityErrors`` and ``launchErrors`` fail launches as before."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes_asyncio.client.rest import ApiException

from molt.api.instancegroup import Template
from molt.api.labels import KWOK_NODE_ANNOTATION, ZONE_LABEL
from molt.cloud.kwok import NEVER_READY, KwokProvider
from molt.cloud.provider import CapacityError, CellRef

pytestmark = pytest.mark.unit

TEMPLATE = Template.model_validate({"instanceTypes": ["m5.large"], "kwok": {"bootDelay": "0s"}})


class FakeResponse:
    """An unparsed HTTP response, as the client returns with ``_preload_content=False``."""

    status = 200
    reason = "OK"

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def __aenter__(self) -> FakeResponse:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def read(self) -> bytes:
        return self.body


class FakeCore:
    """The few CoreV1Api calls the provider makes, over a dict of node manifests."""

    def __init__(self, faults: dict[str, str] | None) -> None:
        self.faults = faults
        self.nodes: dict[str, dict[str, Any]] = {}

    async def read_namespaced_config_map(self, name: str, namespace: str) -> Any:
        if self.faults is None:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=self.faults)

    async def list_node(self, label_selector: str, _preload_content: bool = True) -> Any:
        assert not _preload_content, "the provider reads node lists unparsed"
        return FakeResponse(json.dumps({"items": []}).encode())

    async def create_node(self, manifest: dict[str, Any]) -> None:
        self.nodes[manifest["metadata"]["name"]] = manifest


def provider(faults: dict[str, str] | None) -> tuple[KwokProvider, FakeCore]:
    kwok = KwokProvider(SimpleNamespace())  # type: ignore[arg-type]
    core = FakeCore(faults)
    kwok.core = core  # type: ignore[assignment]
    return kwok, core


def cell(zone: str) -> CellRef:
    return CellRef("workers", "abcdef0123", zone, "on-demand")


async def launched(kwok: KwokProvider) -> None:
    """Wait for the launches under way (their boot delay is zero)."""
    await asyncio.gather(*(task for _, _, task in list(kwok._booting.values())))


async def test_nodes_launched_in_a_not_ready_cell_join_without_a_kubelet() -> None:
    kwok, core = provider({"notReady": "zone-b/*"})
    await kwok.scale(cell("zone-a"), TEMPLATE, 2)
    await kwok.scale(cell("zone-b"), TEMPLATE, 2)
    await launched(kwok)
    kubelets = {
        (n["metadata"]["labels"][ZONE_LABEL], n["metadata"]["annotations"][KWOK_NODE_ANNOTATION])
        for n in core.nodes.values()
    }
    assert kubelets == {("zone-a", "fake"), ("zone-b", NEVER_READY)}
    assert len(core.nodes) == 4
    # Joined, as far as the provider is concerned: nothing is reported as a failure.
    assert all(not o.failures for o in await kwok.observe("workers"))


async def test_without_faults_every_node_is_run_by_kwok() -> None:
    kwok, core = provider(None)
    await kwok.scale(cell("zone-b"), TEMPLATE, 3)
    await launched(kwok)
    annotations = [n["metadata"]["annotations"][KWOK_NODE_ANNOTATION] for n in core.nodes.values()]
    assert annotations == ["fake"] * 3


async def test_capacity_and_launch_errors_fail_launches_in_their_cells_only() -> None:
    kwok, core = provider({"capacityErrors": "zone-a/*", "launchErrors": "*/on-demand"})
    with pytest.raises(CapacityError):
        await kwok.scale(cell("zone-a"), TEMPLATE, 1)
    await kwok.scale(cell("zone-c"), TEMPLATE, 2)
    await launched(kwok)
    assert core.nodes == {}
    # The capacity error is the exception; a failed launch is reported with its cell.
    failures = {o.cell.zone: len(o.failures) for o in await kwok.observe("workers")}
    assert failures == {"zone-c": 2}
