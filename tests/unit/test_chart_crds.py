"""The Helm chart ships the same CRDs as the package: charts/molt/crds holds exactly the
generated files, byte for byte (``make crds`` writes both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from molt.api.crd import RESOURCES, file_name, render

CHART_CRDS = Path(__file__).resolve().parents[2] / "charts" / "molt" / "crds"


def test_the_chart_holds_one_file_per_crd_and_nothing_else() -> None:
    assert sorted(p.name for p in CHART_CRDS.iterdir()) == sorted(file_name(r) for r in RESOURCES)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.names.plural)
def test_the_charts_crd_equals_the_generated_one(resource: type) -> None:
    shipped = (CHART_CRDS / file_name(resource)).read_text()
    assert shipped == render(resource), "the chart's CRDs are stale: run `make crds`"
