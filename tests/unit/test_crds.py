"""The committed CRDs are current and structural, as the API server requires."""

from typing import Any

import pytest
import yaml

from molt.api.crd import RESOURCES, committed_crds, render


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.names.kind)
def test_committed_crd_yaml_matches_the_models(resource: Any) -> None:
    committed = dict(zip(RESOURCES, committed_crds(), strict=True))[resource]
    assert committed == render(resource), "the CRD YAML is stale: run `make crds`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_walk(value, f"{path}[{index}]"))
    return found


@pytest.mark.parametrize("text", committed_crds())
def test_schemas_are_structural(text: str) -> None:
    crd = yaml.safe_load(text)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert node.get("type") != "null", path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, path
        if node.get("uniqueItems"):
            pytest.fail(f"uniqueItems is forbidden in CRDs: {path}")


@pytest.mark.parametrize("text", committed_crds())
def test_every_crd_is_cluster_scoped_with_status_and_conditions(text: str) -> None:
    crd = yaml.safe_load(text)
    assert crd["spec"]["group"] == "molt.dev"
    assert crd["spec"]["scope"] == "Cluster"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["status"] == {}
    if crd["spec"]["names"]["kind"] == "InstanceGroup":  # kubectl scale ig NAME --replicas N
        assert version["subresources"]["scale"] == {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    else:
        assert set(version["subresources"]) == {"status"}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    condition = status["properties"]["conditions"]["items"]
    assert set(condition["required"]) >= {"type", "status", "lastTransitionTime"}
    assert {"reason", "message", "observedGeneration"} <= set(condition["properties"])
